"""The per-epoch curves logger: DVCLive's, with its per-call stack inspection replaced by a frame walk."""

from __future__ import annotations

from aelab.training.curves import SYNC_CALLERS, called_from


def update_train_epoch_metrics() -> bool:  # named like Lightning's logger-connector method that syncs DVCLive
    return called_from(SYNC_CALLERS)


def test_sync_is_decided_by_the_calling_lightning_method() -> None:
    assert update_train_epoch_metrics()
    assert not called_from(SYNC_CALLERS)
    assert {"update_train_epoch_metrics"} == SYNC_CALLERS


def test_the_callers_are_those_dvclive_checks() -> None:
    import inspect

    import dvclive.lightning

    source = inspect.getsource(dvclive.lightning._should_sync)
    assert all(f'"{name}"' in source for name in SYNC_CALLERS)


def test_curves_are_written_once_per_epoch_without_preparing_studio_data(tmp_path, monkeypatch) -> None:
    import json

    from aelab.training.curves import CurvesLogger, studio_is_off

    monkeypatch.chdir(tmp_path)
    logger = CurvesLogger(run_name=None, dir=str(tmp_path / "curves"), save_dvc_exp=False, dvcyaml=None, report=None)
    live = logger.experiment
    assert studio_is_off(live)  # fails if DVCLive renames the attribute this reads
    monkeypatch.setattr(live, "_get_live_data", lambda: (_ for _ in ()).throw(AssertionError("studio data read")))

    def update_train_epoch_metrics() -> None:
        logger.log_metrics({"train/loss": 0.5}, step=3)

    logger.log_metrics({"val/loss": 0.25}, step=3)  # validation: the TSV line, no summary yet
    assert (tmp_path / "curves" / "plots" / "metrics" / "val" / "loss.tsv").exists()
    assert not (tmp_path / "curves" / "metrics.json").exists()
    update_train_epoch_metrics()
    summary = json.loads((tmp_path / "curves" / "metrics.json").read_text())
    assert summary["val"]["loss"] == 0.25 and summary["train"]["loss"] == 0.5 and summary["step"] == 3


def test_ranks_other_than_zero_keep_lightnings_dummy_experiment() -> None:
    """Under DDP, ranks above zero get a dummy whose every attribute is a no-op method, not a `Live`."""
    from lightning.pytorch.loggers.logger import DummyExperiment

    from aelab.training.curves import studio_is_off

    assert not studio_is_off(DummyExperiment())
