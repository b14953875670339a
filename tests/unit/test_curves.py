"""The per-epoch curves logger: DVCLive's, with its per-call stack inspection replaced by a frame walk."""

from __future__ import annotations

from aelab.training.curves import SYNC_CALLERS, called_from


def update_train_epoch_metrics() -> bool:  # named like Lightning's logger-connector method that syncs DVCLive
    return called_from(SYNC_CALLERS)


def test_sync_is_decided_by_the_calling_lightning_method() -> None:
    assert update_train_epoch_metrics()
    assert not called_from(SYNC_CALLERS)
    assert {"update_train_step_metrics", "update_train_epoch_metrics", "log_eval_end_metrics"} == SYNC_CALLERS


def test_the_callers_are_those_dvclive_checks() -> None:
    import inspect

    import dvclive.lightning

    source = inspect.getsource(dvclive.lightning._should_sync)
    assert all(f'"{name}"' in source for name in SYNC_CALLERS)
