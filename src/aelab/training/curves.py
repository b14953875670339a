"""DVCLive's Lightning logger, made cheap per call: the per-epoch curves of `dvc plots`.

`dvclive.lightning.DVCLiveLogger.log_metrics` decides whether to write its files by calling `inspect.stack()`,
which reads the source lines of every frame on the stack: about 0.1 s per call, twice per epoch, most of a small
model's training time. The same decision here walks the frames by name only, and the summary is written once per
epoch, after the epoch's training metrics (which Lightning logs after validation's); the curves' TSV lines are
written by every call, as before. Without DVC Studio configured, DVCLive still re-reads every curve file on each
write to prepare data for Studio, which grows with the epochs; that preparation is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from dvclive import Live
from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.utilities import rank_zero_only

SYNC_CALLERS = frozenset({"update_train_epoch_metrics"})
"""The Lightning logger-connector method after which DVCLive writes its summary: the end of each training epoch
(one of the three `dvclive.lightning._should_sync` names; `Live.end` writes the last summary when the fit or test
ends)."""


def called_from(names: frozenset[str]) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in names:
            return True
        frame = frame.f_back
    return False


def studio_is_off(live: Any) -> bool:
    """DVCLive decided at start not to send data to DVC Studio (no Studio token or repository configured).

    Ranks other than zero get Lightning's dummy experiment, whose every attribute is a no-op method: not a `Live`.
    """
    skipped = getattr(live, "_studio_events_to_skip", ()) if isinstance(live, Live) else ()
    return isinstance(skipped, set | frozenset) and "data" in skipped


class CurvesLogger(DVCLiveLogger):
    @property
    def experiment(self) -> Any:
        started = self._experiment is not None
        live = DVCLiveLogger.experiment.fget(self)
        if not started and studio_is_off(live):
            live.post_data_to_studio = lambda: None
        return live

    @rank_zero_only
    def log_metrics(
        self, metrics: Mapping[str, int | float | str], step: int | None = None, sync: bool | None = False
    ) -> None:
        # DVCLiveLogger.log_metrics with its stack inspection replaced: the next class in the MRO does the logging.
        super(DVCLiveLogger, self).log_metrics(metrics, step, sync or called_from(SYNC_CALLERS))
