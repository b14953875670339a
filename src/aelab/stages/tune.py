"""`aelab tune`: an Optuna search over the sparse variant's hidden units, sparsity target and penalty weight
(optionally depth and learning rate), or over the conv variant's number and width of conv blocks, code size and
sparsity; resumable, shared by parallel workers, every trial a nested MLflow run.

How it fits together (the README's "Tuning" section has the user's view):
- Storage: a journal file `<project>/data/studies/<study>.journal` (never a DVC output; resolved from the real
  project root, so `dvc exp run --temp` writes into it too) or any RDB URL (with Optuna's heartbeat).
- Study name: by default `<variant>-<digest>` of everything that changes a trial's result, except the budget. A
  changed search space starts a fresh study; `-S tune.n_trials=30` continues the existing one.
- Budget: `tune.n_trials` finished (complete + pruned) trials of the study, earlier runs included. Each worker
  counts and asks for its next trial under a host-local file lock, so workers on one machine never overshoot;
  between machines the trial numbers decide, and a trial beyond the budget is failed before it trains.
- Dead workers: a RUNNING trial whose process (same host) is gone is failed at the next start; RDB storages
  also get Optuna's heartbeat, which fails stale trials of other machines.
- Output: the best trial's params go to `data/tune/best_params.yaml`, which `aelab train --variant tuned` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import psutil
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from aelab.config import SPACE_OF, TUNABLE, Params, TuneConfig, flatten, validate_params
from aelab.data.prepared import PreparedData, load_prepared
from aelab.errors import AelabError, ConfigError, TrainingError
from aelab.paths import BEST_PARAMS_FILE, PREPARED_DIR, STUDIES_DIR, project_root
from aelab.tracking import artifact_location, git_commit, tracking_uri, uninterruptible

"""The variant whose hidden units and sparsity are tuned (and that the `tuned` variant trains)."""
ATTR_PARENT_RUN = "aelab.mlflow_parent_run_id"
ATTR_DIGEST = "aelab.search_digest"
ATTR_HOST, ATTR_PID, ATTR_PID_START = "aelab.host", "aelab.pid", "aelab.pid_start"
ATTR_RUN = "aelab.mlflow_run_id"
ATTR_FAIL_REASON = "fail_reason"
ATTR_FAIL_KIND = "aelab.fail_kind"
"""error (the trial raised), interrupted (Ctrl-C), dead_worker (process killed), over_budget (parallel race)."""
HEARTBEAT_S, GRACE_S = 30, 120
"""RDB storages: Optuna's heartbeat interval and the silence after which another worker fails the trial."""
MAX_CONSECUTIVE_FAILURES = 5
UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SEARCH_VERSION = 1
"""Bumped when the trial procedure changes, so old studies are not continued with different trials."""

console = Console(stderr=True)


class OverBudget(Exception):
    """A trial asked after other workers had already used the budget (it is failed before training)."""


# ---- search space and params -----------------------------------------------------------------------------------
def suggest(trial: optuna.Trial, cfg: TuneConfig, default_lr: float) -> dict[str, Any]:
    """The trial's settings: sampled where the space gives a range, fixed where it gives a value."""
    space = cfg.space
    values: dict[str, Any] = {}
    for name in ("hidden_units", *SPACE_OF[cfg.variant]):
        r = getattr(space, name)
        values[name] = trial.suggest_int(name, r.low, r.high, log=r.log) if r.searched else r.low
    for name in ("rho", "beta", "lr"):
        r = getattr(space, name)
        if r is None:
            values[name] = default_lr
        else:
            values[name] = trial.suggest_float(name, r.low, r.high, log=r.log) if r.searched else r.low
    return values


def params_overrides(cfg: TuneConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Trial values as a nested params fragment (the content of `best_params.yaml`'s `params`).

    It sets every field of the tuned variant, so the result does not depend on `variants` in params.yaml.
    """
    rho, beta = float(values["rho"]), float(values["beta"])
    if cfg.variant == "conv":
        shape = cfg.space.block.model_dump(mode="json")
        channels = int(values["channels"])
        variant = {
            "blocks": [{**shape, "channels": channels * 2**i} for i in range(int(values["blocks"]))],
            "code_dim": int(values["hidden_units"]),
            "decoder": cfg.space.decoder,
            "sparsity": {"rho": rho, "beta": beta},
            "max_epochs": None,
            "corruption": [],
        }
    else:
        variant = {"hidden_dims": [int(values["hidden_units"])] * int(values["depth"]), "rho": rho, "beta": beta}
    return {"variants": {cfg.variant: variant}, "train": {"lr": float(values["lr"])}}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def with_overrides(params: Params, overrides: dict[str, Any], source: str) -> Params:
    return validate_params(_merge(params.model_dump(mode="json"), overrides), source=source)


def tuned_params(params: Params, path: Path = BEST_PARAMS_FILE) -> tuple[Params, str]:
    """Params for `aelab train --variant tuned`: params.yaml with the best trial's values; and the base variant."""
    try:
        best = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `aelab tune` (or `dvc repro tune`) first") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(best, dict) or not isinstance(best.get("params"), dict) or best.get("variant") not in TUNABLE:
        raise ConfigError(
            f"{path}: expected `variant:` ({' or '.join(TUNABLE)}) and a `params` mapping, as `aelab tune` writes"
        )
    return with_overrides(params, best["params"], str(path)), best["variant"]


def search_digest(params: Params, data: PreparedData) -> str:
    """Everything that changes what a trial computes; not the budget, timeout, storage or study name."""
    tune = params.tune.model_dump(mode="json", exclude={"n_trials", "timeout", "storage", "study"})
    train = params.train.model_dump(
        mode="json", exclude={"max_epochs", "early_stopping_patience", "log_every_n_steps", "progress_bar"}
    )
    for key in ("accelerator", "devices", "strategy", "num_nodes"):  # where it runs, not what it computes
        train.pop(key)
    key = {
        "version": SEARCH_VERSION,
        "seed": params.seed,
        "model": params.model.model_dump(mode="json"),
        "train": train,
        "tune": tune,
        "data": data.meta,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def study_name(params: Params, digest: str) -> str:
    return params.tune.study or f"{params.tune.variant}-{digest}"


# ---- storage, study, locks ----------------------------------------------------------------------------------
def _redact(url: str) -> str:
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
        raise ConfigError(f"tune.storage: cannot open {_redact(url)}: {type(err).__name__}: {reason}") from None
    return storage, _redact(url)


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


@dataclass
class StudyContext:
    """What every worker of one study shares."""

    params: Params
    data: PreparedData
    name: str
    digest: str
    storage: optuna.storages.BaseStorage
    storage_description: str
    study: optuna.Study
    parent_run_id: str = ""
    experiment: str = field(default="")


def tune_experiment(params: Params) -> str:
    return f"{params.tracking.experiment}-tune"


def open_study(params: Params, data: PreparedData) -> StudyContext:
    """Open (or create) the study: storage reachable, same search settings as before, parent MLflow run made."""
    digest = search_digest(params, data)
    name = study_name(params, digest)
    storage, description = open_storage(params.tune, name)
    directions = ["minimize"] * len(params.tune.objectives)
    with host_lock(name):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=directions,
            load_if_exists=True,
            sampler=make_sampler(params, 0),
            pruner=make_pruner(params.tune),
        )
        known = study.user_attrs.get(ATTR_DIGEST)
        if known is None:
            study.set_user_attr(ATTR_DIGEST, digest)
            study.set_user_attr("aelab.objectives", list(params.tune.objectives))
        elif known != digest:
            raise ConfigError(
                f"tune.study: study {name!r} in {description} was made with other search settings "
                f"(digest {known}, now {digest}); choose another tune.study or leave it empty for an automatic name"
            )
        if [d.name for d in study.directions] != [d.upper() for d in directions]:
            raise ConfigError(f"tune.objectives: study {name!r} has {len(study.directions)} objective(s)")
        ctx = StudyContext(params, data, name, digest, storage, description, study, experiment=tune_experiment(params))
        ctx.parent_run_id = ensure_parent_run(ctx)
    return ctx


# ---- MLflow ------------------------------------------------------------------------------------------------------
def _client(params: Params):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(params.tracking))


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location())
    except MlflowException:  # another worker created it first
        return client.get_experiment_by_name(name).experiment_id


@uninterruptible()
def ensure_parent_run(ctx: StudyContext) -> str:
    """One MLflow run per study, made once (under the host lock) and found by every worker via the study."""
    from mlflow.exceptions import MlflowException

    client = _client(ctx.params)
    run_id = ctx.study.user_attrs.get(ATTR_PARENT_RUN)
    if run_id:
        with contextlib.suppress(MlflowException):
            client.get_run(run_id)
            return run_id
    run = client.create_run(
        _experiment_id(client, ctx.experiment),
        run_name=ctx.name,
        tags={
            "aelab.role": "study",
            "optuna.study_name": ctx.name,
            "optuna.storage": ctx.storage_description,
            "git_commit": git_commit(),
            "dvc_stage": "tune",
        },
    )
    from mlflow.entities import Param

    tune_params = {f"tune.{k}": v for k, v in flatten(ctx.params.tune.model_dump(mode="json")).items()}
    tune_params.update({"seed": ctx.params.seed, "search_digest": ctx.digest, "base_variant": ctx.params.tune.variant})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(tune_params.items())])
    ctx.study.set_user_attr(ATTR_PARENT_RUN, run.info.run_id)
    return run.info.run_id


def _end_child(client: Any, run_id: str, state: str, mlflow_status: str, reason: str | None = None) -> None:
    with uninterruptible():
        client.set_tag(run_id, "optuna.trial_state", state)
        if reason:
            client.set_tag(run_id, "fail_reason", reason[:5000])
        client.set_terminated(run_id, mlflow_status)


TRIAL_RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}


def close_orphaned_runs(ctx: StudyContext) -> list[str]:
    """End the MLflow runs still RUNNING for trials that Optuna has finished.

    A trial's run is ended right after the trial, but a process killed (or a store unavailable) at that moment
    leaves it RUNNING; resuming the study brings MLflow back in line with the study, which is the record.
    """
    client = _client(ctx.params)
    experiment = client.get_experiment_by_name(ctx.experiment)
    if experiment is None:
        return []
    trials = {t.number: t for t in ctx.study.get_trials(deepcopy=False)}
    closed = []
    query = f"tags.`optuna.study_name` = '{ctx.name}' and tags.`aelab.role` = 'trial' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment.experiment_id], query, max_results=10_000):
        trial = trials.get(int(run.data.tags.get("optuna.trial_number", -1)))
        if trial is None or trial.state in UNFINISHED:
            continue
        kind = trial.user_attrs.get(ATTR_FAIL_KIND)
        status = TRIAL_RUN_STATUS.get(trial.state, "KILLED" if kind == "interrupted" else "FAILED")
        _end_child(client, run.info.run_id, trial.state.name, status, trial.user_attrs.get(ATTR_FAIL_REASON))
        closed.append(run.info.run_id)
    return closed


# ---- one trial -------------------------------------------------------------------------------------------------
def _process_start(pid: int) -> float:
    return psutil.Process(pid).create_time()


def _alive(pid: int, start: float) -> bool:
    try:
        return abs(_process_start(pid) - start) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def active_units(module: Any, x: torch.Tensor, threshold: float) -> float:
    """Mean number of code units per sample whose activation exceeds `threshold`."""
    with torch.no_grad():
        code = module.cpu().eval().encode(x)
    return float((code > threshold).float().sum(dim=1).mean())


class Objective:
    """Trains one trial; records its worker, its MLflow child run and, when it fails, why."""

    def __init__(self, ctx: StudyContext, budget: int) -> None:
        self.ctx = ctx
        self.budget = budget
        self.lock: HostLock | None = None
        self.last_trial: int | None = None

    def _claim(self, trial: optuna.Trial) -> None:
        """Mark the trial as this process's, then check that the budget still has room for it."""
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        trial.set_user_attr(ATTR_PID_START, _process_start(os.getpid()))
        ahead = [
            t
            for t in self.ctx.study.get_trials(deepcopy=False, states=(*FINISHED, *UNFINISHED))
            if t.number < trial.number
        ]
        if self.lock is not None:
            self.lock.release()
        if len(ahead) >= self.budget:
            trial.set_user_attr(ATTR_FAIL_KIND, "over_budget")
            trial.set_user_attr(ATTR_FAIL_REASON, f"{len(ahead)} earlier trials already fill the budget {self.budget}")
            raise OverBudget(trial.user_attrs[ATTR_FAIL_REASON])

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self.last_trial = trial.number
        ctx, cfg = self.ctx, self.ctx.params.tune
        client = _client(ctx.params)
        run_id = None
        try:
            self._claim(trial)
            values = suggest(trial, cfg, ctx.params.train.lr)
            params = with_overrides(ctx.params, params_overrides(cfg, values), f"trial {trial.number}")
            run_id = self._start_child(client, trial, values)
            result = self._train(trial, params, run_id)
        except OverBudget:
            raise
        except optuna.TrialPruned:
            if run_id:
                last = ctx.storage.get_trial(trial._trial_id).last_step or 0
                with uninterruptible():
                    client.log_metric(run_id, "trial/pruned_at_epoch", last)
                    _end_child(client, run_id, "PRUNED", "KILLED")
            raise
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # we are leaving: let the trial's record be written
            reason = "interrupted by the user (Ctrl-C)"
            trial.set_user_attr(ATTR_FAIL_KIND, "interrupted")
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
            if run_id:
                try:
                    _end_child(client, run_id, "FAIL", "KILLED", reason)
                except Exception as err:  # noqa: BLE001 - the interrupt must win; resuming ends the run
                    console.print(f"[yellow]MLflow run {run_id} left RUNNING ({err}); resuming ends it[/yellow]")
            raise
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr(ATTR_FAIL_KIND, "error")
            trial.set_user_attr(ATTR_FAIL_REASON, reason[:2000])
            if run_id:
                _end_child(client, run_id, "FAIL", "FAILED", reason)
            raise
        with uninterruptible():
            for key, value in result.items():
                client.log_metric(run_id, f"trial/{key.replace('/', '_')}", value)
            _end_child(client, run_id, "COMPLETE", "FINISHED")
        objective = tuple(result[name] for name in cfg.objectives)
        return objective[0] if len(objective) == 1 else objective

    @uninterruptible()
    def _start_child(self, client: Any, trial: optuna.Trial, values: dict[str, Any]) -> str:
        """The trial's MLflow run, nested under the study's run (also when another process made that one)."""
        from mlflow.entities import Param

        ctx = self.ctx
        run = client.create_run(
            _experiment_id(client, ctx.experiment),
            run_name=f"{ctx.name}-trial-{trial.number:03d}",
            tags={
                "mlflow.parentRunId": ctx.parent_run_id,
                "aelab.role": "trial",
                "optuna.study_name": ctx.name,
                "optuna.trial_number": str(trial.number),
                "optuna.trial_state": "RUNNING",
                "aelab.worker": f"{socket.gethostname()}:{os.getpid()}",
                "git_commit": git_commit(),
            },
        )
        trial.set_user_attr(ATTR_RUN, run.info.run_id)
        logged = {**values, "sampled": ",".join(sorted(trial.params)) or "-", "trial_number": trial.number}
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(logged.items())])
        return run.info.run_id

    def _train(self, trial: optuna.Trial, params: Params, run_id: str) -> dict[str, float]:
        from optuna_integration import PyTorchLightningPruningCallback

        from aelab.stages.train import fit_trial
        from aelab.tracking import mlflow_logger

        cfg = params.tune
        callbacks = []
        if len(cfg.objectives) == 1 and cfg.pruner.kind != "none" and cfg.objectives[0] != "active_units":
            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=cfg.objectives[0]))
        tracking = params.tracking.model_copy(update={"experiment": self.ctx.experiment})
        logger = mlflow_logger(tracking, f"trial-{trial.number}", {}, run_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            module, trainer = fit_trial(params, cfg.variant, self.ctx.data, logger, callbacks, cfg.max_epochs)
        result = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        result["active_units"] = active_units(module, torch.from_numpy(self.ctx.data.val.x), cfg.active_threshold)
        result["epochs"] = float(trainer.current_epoch)
        for name in cfg.objectives:
            if not math.isfinite(result.get(name, math.nan)):
                raise TrainingError(f"trial {trial.number}: objective {name} is {result.get(name)}")
        return result


# ---- workers -------------------------------------------------------------------------------------------------
def fail_dead_trials(ctx: StudyContext) -> list[int]:
    """Fail RUNNING trials left by killed processes of this host (RDB heartbeats cover other hosts)."""
    host, now, failed = socket.gethostname(), time.time(), []
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if ATTR_PID in attrs:
            dead = attrs.get(ATTR_HOST) == host and not _alive(int(attrs[ATTR_PID]), float(attrs[ATTR_PID_START]))
            who = f"{attrs.get(ATTR_HOST)}:{attrs[ATTR_PID]}"
        else:  # asked but never claimed: the claim happens under this lock, so its process died in between
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead, who = now - started > GRACE_S or ctx.storage_description.endswith(".journal"), "unknown"
        if not dead:
            continue
        reason = f"worker {who} died while the trial was running; failed when the study was resumed"
        ctx.storage.set_trial_user_attr(t._trial_id, ATTR_FAIL_KIND, "dead_worker")
        ctx.storage.set_trial_user_attr(t._trial_id, ATTR_FAIL_REASON, reason)
        ctx.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if run_id := attrs.get(ATTR_RUN):
            with contextlib.suppress(Exception):
                _end_child(_client(ctx.params), run_id, "FAIL", "FAILED", reason)
        failed.append(t.number)
    return failed


def counts(study: optuna.Study) -> dict[str, int]:
    result = {state.name: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        result[t.state.name] += 1
    return result


def run_worker(ctx: StudyContext, budget: int, timeout: float | None) -> int:
    """Run trials until the study holds `budget` finished ones (or `timeout` passes); returns trials run here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per trial is ours
    objective = Objective(ctx, budget)
    started, ran, consecutive_failures = time.monotonic(), 0, 0
    while timeout is None or time.monotonic() - started < timeout:
        lock = HostLock(project_root() / STUDIES_DIR / f"{ctx.name}.lock")
        lock.acquire()
        try:
            if dead := fail_dead_trials(ctx):
                console.print(f"[yellow]failed trials {dead} of dead workers[/yellow]")
            state = counts(ctx.study)
            busy = sum(state[s.name] for s in (*FINISHED, *UNFINISHED))
            if busy >= budget:
                break
            ctx.study.sampler = make_sampler(ctx.params, len(ctx.study.get_trials(deepcopy=False)))
            objective.lock, objective.last_trial = lock, None
            ctx.study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        finally:
            lock.release()
        trial = ctx.study.get_trials(deepcopy=False)[objective.last_trial] if objective.last_trial is not None else None
        if trial is None:
            continue
        kind = trial.user_attrs.get(ATTR_FAIL_KIND)
        if kind == "over_budget":
            break
        ran += 1
        describe = _describe(trial, ctx.params.tune.objectives)
        console.print(f"trial {trial.number}: {describe}")
        consecutive_failures = consecutive_failures + 1 if trial.state == TrialState.FAIL else 0
        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            raise TrainingError(
                f"{consecutive_failures} trials in a row failed (last: {trial.user_attrs.get(ATTR_FAIL_REASON)}); "
                "check the search space (e.g. tune.space.lr) and the data"
            )
    return ran


def _describe(trial: FrozenTrial, objectives: list[str]) -> str:
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        values = ", ".join(f"{n} {v:.5g}" for n, v in zip(objectives, trial.values, strict=True))
        return f"{values} ({shown})"
    if trial.state == TrialState.PRUNED:
        return f"pruned at epoch {trial.last_step} ({shown})"
    reason = trial.user_attrs.get(ATTR_FAIL_REASON) or trial.system_attrs.get("fail_reason", "?")
    return f"{trial.state.name.lower()}: {reason} ({shown})"


def worker_devices(n: int, accelerator: str) -> list[str | None]:
    """One GPU per worker (round robin over the visible ones); None where no GPU is used."""
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return [None] * n
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    )
    return [ids[i % len(ids)] if ids else None for i in range(n)]


def launch_workers(n: int, argv: list[str], accelerator: str) -> None:
    """Start `n` `aelab tune` processes on the same study and wait for them; Ctrl-C reaches them all."""
    procs = []
    threads = str(max(1, (os.cpu_count() or 1) // n))
    for index, device in enumerate(worker_devices(n, accelerator)):
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", threads)  # N workers x all cores each would oversubscribe the CPU
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        cmd = [sys.executable, "-m", "aelab.cli", "tune", *argv, "--workers", "1", "--no-summary"]
        procs.append(subprocess.Popen(cmd, env=env))
        console.print(f"worker {index}: pid {procs[-1].pid}" + (f", GPU {device}" if device is not None else ""))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.terminate()
        raise
    if bad := [f"worker {i} exited with {rc}" for i, rc in enumerate(codes) if rc != 0]:
        raise AelabError("; ".join(bad) + " (finished trials are kept; run the command again to resume)")


# ---- results -------------------------------------------------------------------------------------------------
def best_trial(study: optuna.Study, objectives: list[str]) -> FrozenTrial:
    """The best trial; for several objectives, the Pareto-optimal trial with the lowest first objective."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise TrainingError(f"study {study.study_name!r}: no trial completed, so there is no best one")
    if len(objectives) == 1:
        return study.best_trial
    return min(study.best_trials, key=lambda t: (t.values[0], t.number))


def trial_values(trial: FrozenTrial, cfg: TuneConfig, default_lr: float) -> dict[str, Any]:
    """All settings of a finished trial (sampled ones from the trial, fixed ones from the space)."""
    fixed = optuna.trial.FixedTrial(trial.params)
    return suggest(fixed, cfg, default_lr)


def write_best(ctx: StudyContext, trial: FrozenTrial, path: Path = BEST_PARAMS_FILE) -> dict[str, Any]:
    cfg = ctx.params.tune
    values = trial_values(trial, cfg, ctx.params.train.lr)
    content = {
        "variant": ctx.params.tune.variant,
        "params": params_overrides(cfg, values),
        "study": ctx.name,
        "trial": trial.number,
        "values": dict(zip(cfg.objectives, (float(v) for v in trial.values), strict=True)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The best trial of Optuna study {ctx.name} (written by `aelab tune`).\n"
        f"# `aelab train --variant tuned` trains the {cfg.variant} variant with `params` applied over params.yaml.\n"
    )
    path.write_text(header + yaml.safe_dump(content, sort_keys=False))
    return content


def _figures(study: optuna.Study, cfg: TuneConfig) -> dict[str, Any]:
    """Optuna's matplotlib plots; each one that the study cannot support yet (too few trials) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    multi = len(cfg.objectives) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": cfg.objectives[0]} if multi else {}
    searched = cfg.space.searched()
    wanted: dict[str, Any] = {
        "optimization_history.png": lambda: plots.plot_optimization_history(study, **target),
        "intermediate_values.png": lambda: plots.plot_intermediate_values(study),
        "param_importances.png": lambda: plots.plot_param_importances(study, **target),
    }
    for other in ("rho", "beta"):
        if "hidden_units" in searched and other in searched:
            wanted[f"contour_hidden_units_{other}.png"] = lambda o=other: plots.plot_contour(
                study, params=["hidden_units", o], **target
            )
    if multi:
        wanted["pareto_front.png"] = lambda: plots.plot_pareto_front(study, target_names=list(cfg.objectives))
    figures = {}
    for name, draw in wanted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
        except Exception as err:  # noqa: BLE001 - e.g. importances need two complete trials
            console.print(f"[dim]plot {name} skipped: {type(err).__name__}: {err}[/dim]")
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figures[name] = first.figure
    return figures


@uninterruptible()
def summarise(ctx: StudyContext) -> dict[str, Any]:
    """Best params file, and the parent MLflow run's best params, value, trial table and plots."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric

    cfg = ctx.params.tune
    best = best_trial(ctx.study, cfg.objectives)
    content = write_best(ctx, best)
    state = counts(ctx.study)
    client = _client(ctx.params)
    run_id = ctx.parent_run_id
    now, step = int(time.time() * 1000), sum(state[s.name] for s in FINISHED)
    metrics = [Metric(f"best/{k.replace('/', '_')}", v, now, step) for k, v in content["values"].items()]
    metrics += [Metric(f"trials/{s.lower()}", float(n), now, step) for s, n in state.items() if n]
    client.log_batch(run_id, metrics=metrics)
    best_params = {f"best.{k}": v for k, v in trial_values(best, cfg, ctx.params.train.lr).items()}
    for key, value in {**best_params, "best.trial": best.number}.items():  # tags: a resumed study may improve
        client.set_tag(run_id, key, str(value))
    client.log_text(run_id, BEST_PARAMS_FILE.read_text(), "best_params.yaml")
    frame = ctx.study.trials_dataframe()
    client.log_text(run_id, frame.to_csv(index=False), "trials.csv")
    if len(cfg.objectives) > 1:
        front = [{"trial": t.number, "values": t.values, "params": t.params} for t in ctx.study.best_trials]
        client.log_text(run_id, json.dumps(front, indent=2), "pareto_front.json")
    for name, figure in _figures(ctx.study, cfg).items():
        client.log_figure(run_id, figure, f"plots/{name}")
        plt.close(figure)
    client.set_terminated(run_id, "FINISHED")
    return {"best": content, "counts": state}


# ---- entry point -----------------------------------------------------------------------------------------------
def check_space(params: Params, data: PreparedData) -> None:
    """A space in which some trials could not even be built is a `ConfigError` before the first trial."""
    from aelab.models.deep_networks import plan_blocks

    cfg = params.tune
    if cfg.variant != "conv":
        return
    if data.image_shape is None:
        raise ConfigError(
            "tune.variant: conv needs image data, but the prepared dataset has no image_shape; tune sparse instead"
        )
    deepest = [{**cfg.space.block.model_dump(), "channels": 1}] * cfg.space.blocks.high
    plan_blocks(data.image_shape, deepest, f"tune.space (with blocks {cfg.space.blocks.high})")


def tune(params: Params, data: PreparedData, workers: int = 1, argv: list[str] | None = None, summary: bool = True):
    """Open the study, run the trials here or in `workers` processes, then write the best params."""
    if workers > 1 and (params.tune.storage or "").startswith("sqlite"):
        raise ConfigError(
            "tune.storage: SQLite cannot be shared by parallel workers; leave it empty (a journal file) "
            "or use a server database (postgresql://..., mysql+pymysql://...)"
        )
    check_space(params, data)
    ctx = open_study(params, data)
    if closed := close_orphaned_runs(ctx):
        console.print(f"[yellow]ended {len(closed)} MLflow trial runs left RUNNING by an earlier process[/yellow]")
    cfg = params.tune
    before = counts(ctx.study)
    done = sum(before[s.name] for s in FINISHED)
    console.print(
        f"study {ctx.name} ({ctx.storage_description}): {done}/{cfg.n_trials} trials finished, "
        f"searching {', '.join(cfg.space.searched()) or 'nothing'}; MLflow parent run {ctx.parent_run_id}"
    )
    if workers > 1:
        launch_workers(workers, argv or [], params.train.accelerator)
    else:
        run_worker(ctx, cfg.n_trials, cfg.timeout)
    if not summary:
        return None
    result = summarise(ctx)
    state = result["counts"]
    best = result["best"]
    console.print(
        f"study {ctx.name}: {state['COMPLETE']} complete, {state['PRUNED']} pruned, {state['FAIL']} failed; "
        f"best trial {best['trial']}: {best['values']} -> {BEST_PARAMS_FILE}"
    )
    return result


def main(params: Params, workers: int = 1, argv: list[str] | None = None, summary: bool = True) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    tune(params, load_prepared(PREPARED_DIR), workers, argv, summary)
