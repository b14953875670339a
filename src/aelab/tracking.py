"""MLflow: one SQLite store inside the project's `mlruns/`, shared by `dvc exp run --temp/--queue` copies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import MLFlowLogger

from aelab.config import TrackingConfig
from aelab.errors import ConfigError
from aelab.paths import project_root

REDACTED = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential")


def redact_text(text: str) -> str:
    """Hide the password of every URL with user info: `postgresql://user:pw@host/db` -> `postgresql://user:***@host/db`."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)


def is_secret_key(key: str) -> bool:
    """A key naming a credential (`db.password`, `api_token`, `aws_secret_access_key`), not `label_column`."""
    lowered = key.lower()
    words = re.split(r"[^a-z0-9]+", lowered)
    return any(w in lowered for w in _SECRET_WORDS) or any(w == "key" or w.endswith("apikey") for w in words)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, dict):
        return redact(value)
    return value


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """A copy fit for MLflow and Optuna: values under secret-looking keys masked, URL passwords masked anywhere."""
    return {
        k: REDACTED if is_secret_key(str(k)) and value not in (None, "") else _redact_value(value)
        for k, value in params.items()
    }


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

    Metrics are collected and written in one batch per epoch: when the next training epoch starts
    (`aelab.training.trainer.WriteMetricsPerEpoch`, the first callback to run there), at the end of the fit or
    test, or `flush_seconds` after the last write within a long epoch; a call without a step (outside a fit) is
    written at once. One SQLite transaction costs milliseconds to tens of milliseconds (a commit is an fsync),
    and an epoch would otherwise pay for two or more. Keys, values, steps and timestamps are those of the calls.
    A SIGKILL loses at most the metrics of the unfinished epoch, which a resumed run repeats (and, in the moment
    between an epoch's checkpoint and the next epoch's start, that epoch's; Ctrl-C loses nothing). Defined at
    module level: `ddp_spawn` pickles the trainer and its loggers into the worker processes.
    """

    flush_seconds = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Any] = []
        self._last_write = time.monotonic()

    @property
    def experiment(self) -> Any:
        with uninterruptible():
            return super().experiment

    def log_hyperparams(self, params: Any) -> None:
        """Credentials are redacted here, so no caller can log them (see `redact`)."""
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        with uninterruptible():
            super().log_hyperparams(redact(_flatten_dict(_convert_params(params))))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, str):
                continue  # Lightning's logger discards string values too
            key = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else key
            key = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
            self._pending.append(Metric(key=key, value=float(value), timestamp=timestamp_ms, step=step or 0))
        if step is None or time.monotonic() - self._last_write >= self.flush_seconds:
            self.flush()  # a call from outside a fit (no step) is written at once

    @rank_zero_only
    def flush(self) -> None:
        """Write the collected metrics (in chunks of MLflow's limit of 1,000 per batch)."""
        pending, self._pending = self._pending, []
        with uninterruptible():
            for start in range(0, len(pending), 1000):
                self.experiment.log_batch(
                    run_id=self.run_id, metrics=pending[start : start + 1000], **self._log_batch_kwargs
                )
        self._last_write = time.monotonic()

    def finalize(self, status: str = "success") -> None:
        if self._pending:
            self.flush()
        with uninterruptible():
            super().finalize(status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        with uninterruptible():
            super().after_save_checkpoint(checkpoint_callback)


def mlflow_logger(cfg: TrackingConfig, run_name: str, tags: dict[str, str], run_id: str | None = None):
    """Lightning's MLFlowLogger pointed explicitly at our store (its default is the refused file store)."""
    uri = tracking_uri(cfg)
    check_tracking_uri(uri)
    return UninterruptibleMLFlowLogger(
        experiment_name=cfg.experiment,
        run_name=run_name,
        tracking_uri=uri,
        tags=redact(tags),
        artifact_location=artifact_location() if is_local_store(uri) else None,
        run_id=run_id,
    )


def is_local_store(uri: str) -> bool:
    """A local store keeps artifacts next to it; a tracking server decides where they go itself."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """`MlflowClient.log_batch` of params, redacted (see `redact`), sorted, cut to MLflow's 6000 characters."""
    from mlflow.entities import Param

    batch = [Param(k, str(v)[:6000]) for k, v in sorted(redact(params).items())]
    for start in range(0, len(batch), 100):  # MLflow takes at most 100 params per call
        client.log_batch(run_id, params=batch[start : start + 100])


STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks", "databricks-uc", "uc")
"""The tracking stores MLflow knows; database schemes may name a driver (`postgresql+psycopg2://`)."""
PROBE_TIMEOUT_S = 5.0
_reachable: set[str] = set()


def check_tracking_uri(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse an unknown scheme, and an HTTP server that does not answer within `timeout`, as one `ConfigError`.

    Without this, a typo fails deep inside MLflow with a traceback, and an unreachable server is retried for
    minutes before anything is said. Database stores are checked by scheme only (their drivers differ).
    """
    shown = redact_text(uri)
    scheme = uri.partition("://")[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme == "" or uri in _reachable:
        return  # a plain path: MLflow's file store
    if scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"tracking.uri: {shown!r} has an unknown scheme {scheme!r}; allowed: {', '.join(STORE_SCHEMES)}"
        )
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        host = parts.netloc.rpartition("@")[2]  # no credentials in the probe (a 401 still says it is there)
        probe = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(probe, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered (a proxy may hide /health): it is there
        except (OSError, ValueError) as err:
            reason = redact_text(str(getattr(err, "reason", err)))
            raise ConfigError(
                f"tracking.uri: no MLflow server answers at {shown} within {timeout:g} s ({reason}); "
                "start it, or fix tracking.uri (empty: the local SQLite store)"
            ) from None
    _reachable.add(uri)
