"""Test hook for `aelab tune` subprocesses (on `PYTHONPATH` only in tests that ask for it).

`AELAB_TEST_HOLD_FIT=K` holds this process's K-th Lightning fit inside its training loop (first batch) and touches
`$AELAB_TEST_HOLD_FILE`, so a test can send Ctrl-C or SIGKILL to a trial that is surely running, however fast or
slow the machine is, instead of racing the search. It patches `lightning.pytorch.Trainer.fit` itself, so it holds
whichever aelab module builds and fits the trainer.
"""

import os

if os.environ.get("AELAB_TEST_HOLD_FIT"):
    import time
    from pathlib import Path

    from lightning.pytorch import Callback, Trainer

    hold_at, signal_file = int(os.environ["AELAB_TEST_HOLD_FIT"]), Path(os.environ["AELAB_TEST_HOLD_FILE"])
    fits = {"n": 0}
    original_fit = Trainer.fit

    class Hold(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            signal_file.touch()
            while True:  # until the test interrupts or kills this process
                time.sleep(0.05)

    def fit(self, *args, **kwargs):
        fits["n"] += 1
        if fits["n"] == hold_at:
            self.callbacks.append(Hold())
        return original_fit(self, *args, **kwargs)

    Trainer.fit = fit
