"""MLflow: one SQLite store inside the project's `mlruns/`, shared by `dvc exp run --temp/--queue` copies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
    return {"variant": variant, "git_commit": git_commit(), "dvc_stage": stage, "aelab.cwd": str(Path.cwd())}


def mlflow_logger(cfg: TrackingConfig, run_name: str, tags: dict[str, str], run_id: str | None = None):
    """Lightning's MLFlowLogger pointed explicitly at our store (its default is the refused file store)."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri = tracking_uri(cfg)
    return MLFlowLogger(
        experiment_name=cfg.experiment,
        run_name=run_name,
        tracking_uri=uri,
        tags=tags,
        artifact_location=artifact_location() if is_local_store(uri) else None,
        run_id=run_id,
    )


def is_local_store(uri: str) -> bool:
    """A store on this machine keeps artifacts next to it; a tracking server decides where they go itself."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
