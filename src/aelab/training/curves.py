"""DVCLive's Lightning logger, made cheap per call: the per-epoch curves of `dvc plots`.

`dvclive.lightning.DVCLiveLogger.log_metrics` decides whether to write its files by calling `inspect.stack()`,
which reads the source lines of every frame on the stack: about 0.1 s per call, twice per epoch, most of a small
model's training time. The same decision here walks the frames by name only.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.utilities import rank_zero_only

SYNC_CALLERS = frozenset({"update_train_step_metrics", "update_train_epoch_metrics", "log_eval_end_metrics"})
"""Lightning's logger-connector methods from which DVCLive writes its files (as `dvclive.lightning._should_sync`)."""


def called_from(names: frozenset[str]) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in names:
            return True
        frame = frame.f_back
    return False


class CurvesLogger(DVCLiveLogger):
    @rank_zero_only
    def log_metrics(
        self, metrics: Mapping[str, int | float | str], step: int | None = None, sync: bool | None = False
    ) -> None:
        # DVCLiveLogger.log_metrics with its stack inspection replaced: the next class in the MRO does the logging.
        super(DVCLiveLogger, self).log_metrics(metrics, step, sync or called_from(SYNC_CALLERS))
