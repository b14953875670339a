"""MLflow: one SQLite store inside the project's `mlruns/`, shared by `dvc exp run --temp/--queue` copies."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger

from aelab.config import TrackingConfig
from aelab.paths import project_root


def tracking_uri(cfg: TrackingConfig) -> str:
    """The configured URI, else `MLFLOW_TRACKING_URI`, else SQLite at `<project>/mlruns/mlflow.db`."""
    if cfg.uri:
        return cfg.uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    store = project_root() / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def artifact_location() -> str:
    """Artifacts of new experiments go next to the store, not into the working directory."""
    return (project_root() / "mlruns" / "artifacts").as_uri()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(variant: str, stage: str) -> dict[str, str]:
    """The commit under MLflow's own key, the variant, the DVC stage and, under `dvc exp run`, the DVC experiment's
    name (`DVC_EXP_NAME`), so that runs of several experiments can be told apart."""
    tags = {"aelab.variant": variant, "aelab.stage": stage, "aelab.cwd": str(Path.cwd())}
    if (commit := git_commit()) != "unknown":  # else MLflow's own source context may know it
        tags["mlflow.source.git.commit"] = commit
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = exp_name
    return tags


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then deliver it.

    A `KeyboardInterrupt` raised in the middle of an SQLite write can leave the store locked for the rest of the
    process, so the run that was interrupted could not even be marked KILLED. Blocks nest; outside the main thread
    (where Python delivers no signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # no signals here, or a handler installed outside Python that we could not put back
        return
    held: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, held[0])


class UninterruptibleMLFlowLogger(MLFlowLogger):
    """Each write to the store completes before Ctrl-C is delivered (see `uninterruptible`).

    Defined at module level: `ddp_spawn` pickles the trainer and its loggers into the worker processes.
    """

    @property
    def experiment(self) -> Any:
        with uninterruptible():
            return super().experiment

    def log_hyperparams(self, params: Any) -> None:
        with uninterruptible():
            super().log_hyperparams(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with uninterruptible():
            super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        with uninterruptible():
            super().finalize(status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        with uninterruptible():
            super().after_save_checkpoint(checkpoint_callback)


def mlflow_logger(cfg: TrackingConfig, run_name: str, tags: dict[str, str], run_id: str | None = None):
    """Lightning's MLFlowLogger pointed explicitly at our store (its default is the refused file store)."""
    uri = tracking_uri(cfg)
    return UninterruptibleMLFlowLogger(
        experiment_name=cfg.experiment,
        run_name=run_name,
        tracking_uri=uri,
        tags=tags,
        artifact_location=artifact_location() if is_local_store(uri) else None,
        run_id=run_id,
    )


def is_local_store(uri: str) -> bool:
    """A local store keeps artifacts next to it; a tracking server decides where they go itself."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
