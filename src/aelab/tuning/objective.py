"""One trial: claimed by its worker, trained the way the pipeline trains, recorded in Optuna and MLflow."""

from __future__ import annotations

import math
import os
import signal
import socket
import warnings
from typing import Any

import optuna
import psutil
import torch
from rich.console import Console

from aelab.config import Params
from aelab.errors import TrainingError
from aelab.tracking import log_params, mlflow_logger, redact_text, run_tags, uninterruptible
from aelab.training.run import fit_module
from aelab.tuning.runs import end_child, experiment_id, mlflow_client
from aelab.tuning.space import params_overrides, suggest
from aelab.tuning.storage import HostLock
from aelab.tuning.study import (
    ATTR_FAIL_KIND,
    ATTR_FAIL_REASON,
    ATTR_HOST,
    ATTR_PID,
    ATTR_PID_START,
    ATTR_RUN,
    FINISHED,
    UNFINISHED,
    StudyContext,
    trial_id,
)

console = Console(stderr=True)


class OverBudget(Exception):
    """A trial asked after other workers had already used the budget (it is failed before training)."""


def process_start(pid: int) -> float:
    return psutil.Process(pid).create_time()


def alive(pid: int, start: float) -> bool:
    try:
        return abs(process_start(pid) - start) < 1.0
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
        trial.set_user_attr(ATTR_PID_START, process_start(os.getpid()))
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
        client = mlflow_client(ctx.params)
        run_id = None
        try:
            self._claim(trial)
            values = suggest(trial, cfg, ctx.params.train.lr)
            params = ctx.params.derive(params_overrides(cfg, values), f"trial {trial.number}")
            run_id = self._start_child(client, trial, values)
            result = self._train(trial, params, run_id)
        except OverBudget:
            raise
        except optuna.TrialPruned:
            if run_id:
                last = ctx.storage.get_trial(trial_id(ctx, trial.number)).last_step or 0
                with uninterruptible():
                    client.log_metric(run_id, "trial/pruned_at_epoch", last)
                    end_child(client, run_id, "PRUNED", "KILLED")
            raise
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # we are leaving: let the trial's record be written
            reason = "interrupted by the user (Ctrl-C)"
            trial.set_user_attr(ATTR_FAIL_KIND, "interrupted")
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
            if run_id:
                try:
                    end_child(client, run_id, "FAIL", "KILLED", reason)
                except Exception as err:  # noqa: BLE001 - the interrupt must win; resuming ends the run
                    console.print(f"[yellow]MLflow run {run_id} left RUNNING ({err}); resuming ends it[/yellow]")
            raise
        except Exception as err:
            reason = redact_text(f"{type(err).__name__}: {err}")  # an error message may quote a URL with a password
            trial.set_user_attr(ATTR_FAIL_KIND, "error")
            trial.set_user_attr(ATTR_FAIL_REASON, reason[:2000])
            if run_id:
                end_child(client, run_id, "FAIL", "FAILED", reason)
            raise
        with uninterruptible():
            for key, value in result.items():
                client.log_metric(run_id, f"trial/{key.replace('/', '_')}", value)
            end_child(client, run_id, "COMPLETE", "FINISHED")
        objective = tuple(result[name] for name in cfg.objectives)
        return objective[0] if len(objective) == 1 else objective

    @uninterruptible()
    def _start_child(self, client: Any, trial: optuna.Trial, values: dict[str, Any]) -> str:
        """The trial's MLflow run, nested under the study's run (also when another process made that one)."""

        ctx = self.ctx
        run = client.create_run(
            experiment_id(client, ctx.experiment),
            run_name=f"{ctx.name}-trial-{trial.number:03d}",
            tags={
                "mlflow.parentRunId": ctx.parent_run_id,
                "aelab.role": "trial",
                "optuna.study_name": ctx.name,
                "optuna.trial_number": str(trial.number),
                "optuna.trial_state": "RUNNING",
                "aelab.worker": f"{socket.gethostname()}:{os.getpid()}",
                **run_tags(self.ctx.params.tune.variant, "tune"),
            },
        )
        trial.set_user_attr(ATTR_RUN, run.info.run_id)
        logged = {**values, "sampled": ",".join(sorted(trial.params)) or "-", "trial_number": trial.number}
        log_params(client, run.info.run_id, logged)
        return run.info.run_id

    def _train(self, trial: optuna.Trial, params: Params, run_id: str) -> dict[str, float]:
        from optuna_integration import PyTorchLightningPruningCallback

        cfg = params.tune
        callbacks = []
        if len(cfg.objectives) == 1 and cfg.pruner.kind != "none" and cfg.objectives[0] != "active_units":
            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=cfg.objectives[0]))
        tracking = params.tracking.model_copy(update={"experiment": self.ctx.experiment})
        logger = mlflow_logger(tracking, f"trial-{trial.number}", {}, run_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial_params = params.derive({"variants": {cfg.variant: {"max_epochs": cfg.max_epochs}}}, "tune.max_epochs")
            fitted = fit_module(trial_params, cfg.variant, self.ctx.data, logger=logger, callbacks=callbacks)
        module, trainer = fitted.module, fitted.trainer
        result = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        result["active_units"] = active_units(module, torch.from_numpy(self.ctx.data.val.x), cfg.active_threshold)
        result["epochs"] = float(trainer.current_epoch)
        for name in cfg.objectives:
            if not math.isfinite(result.get(name, math.nan)):
                raise TrainingError(f"trial {trial.number}: objective {name} is {result.get(name)}")
        return result
