"""Where a study lives (a journal file or an RDB), the host lock its workers share, its sampler and pruner."""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna

from aelab.config import Params, TuneConfig
from aelab.errors import ConfigError
from aelab.paths import STUDIES_DIR, project_root

HEARTBEAT_S, GRACE_S = 30, 120
"""RDB storages: Optuna's heartbeat interval and the silence after which another worker fails the trial."""


def redact_url(url: str) -> str:
    """Hide a password in an RDB URL before it goes into a message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def open_storage(cfg: TuneConfig, name: str) -> tuple[optuna.storages.BaseStorage, str]:
    """The study's storage and a printable description; an unusable one is a `ConfigError` before any trial."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = cfg.storage
    if url is None or url.endswith(".journal"):
        path = project_root() / STUDIES_DIR / f"{name}.journal" if url is None else project_root() / Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path))), str(path)
        except OSError as err:
            raise ConfigError(f"tune.storage: cannot write the journal {path} ({err.strerror or err})") from None
    if "://" not in url:
        raise ConfigError(
            f"tune.storage: {url!r} is neither a path ending in .journal nor an RDB URL "
            "(postgresql://..., mysql+pymysql://..., sqlite:///...)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                engine_kwargs={"pool_pre_ping": True},
            )
    except Exception as err:  # noqa: BLE001 - drivers raise anything: a missing module, a refused connection
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"tune.storage: cannot open {redact_url(url)}: {type(err).__name__}: {reason}") from None
    return storage, redact_url(url)


@contextlib.contextmanager
def host_lock(name: str) -> Iterator[HostLock]:
    lock = HostLock(project_root() / STUDIES_DIR / f"{name}.lock")
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


class HostLock:
    """An exclusive `flock` shared by the workers of one machine (released early by a trial that has started)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def make_sampler(params: Params, offset: int) -> optuna.samplers.BaseSampler:
    """Seeded by the number of the next trial: a resumed or single-worker search makes the same proposals, and
    parallel workers (which see different numbers) do not propose the same point twice."""
    cfg = params.tune.sampler
    seed = (cfg.seed if cfg.seed is not None else params.seed) + offset
    if cfg.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=True, constant_liar=True
        )


def make_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=cfg.max_epochs, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()
