"""Test hook for `aelab tune` subprocesses (on `PYTHONPATH` only in tests that ask for it).

`AELAB_TEST_HOLD_FIT=K` holds this process's K-th trial inside Lightning's training loop (first batch) and
touches `$AELAB_TEST_HOLD_FILE`, so a test can send Ctrl-C or SIGKILL to a trial that is surely running,
however fast or slow the machine is, instead of racing the search.
"""

import os

if os.environ.get("AELAB_TEST_HOLD_FIT"):
    import time
    from pathlib import Path

    import lightning as L

    from aelab.stages import train

    hold_at, signal_file = int(os.environ["AELAB_TEST_HOLD_FIT"]), Path(os.environ["AELAB_TEST_HOLD_FILE"])
    calls = {"n": 0}
    original = train.fit_trial

    class Hold(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            signal_file.touch()
            while True:  # until the test interrupts or kills this process
                time.sleep(0.05)

    def fit_trial(params, variant, data, logger, callbacks, max_epochs):
        calls["n"] += 1
        extra = [Hold()] if calls["n"] == hold_at else []
        return original(params, variant, data, logger, [*callbacks, *extra], max_epochs)

    train.fit_trial = fit_trial
