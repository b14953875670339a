"""Workers: each runs trials until the study holds its budget; dead workers' trials are failed on resume."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from aelab.errors import AelabError, TrainingError
from aelab.paths import STUDIES_DIR, project_root
from aelab.tuning.objective import Objective, alive
from aelab.tuning.runs import end_child, mlflow_client
from aelab.tuning.storage import GRACE_S, HostLock, make_sampler
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
    counts,
    trial_id,
)
from aelab.warm import SWITCH_ENV

console = Console(stderr=True)

MAX_CONSECUTIVE_FAILURES = 5


def fail_dead_trials(ctx: StudyContext) -> list[int]:
    """Fail RUNNING trials left by killed processes of this host (RDB heartbeats cover other hosts)."""
    host, now, failed = socket.gethostname(), time.time(), []
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if ATTR_PID in attrs:
            dead = attrs.get(ATTR_HOST) == host and not alive(int(attrs[ATTR_PID]), float(attrs[ATTR_PID_START]))
            who = f"{attrs.get(ATTR_HOST)}:{attrs[ATTR_PID]}"
        else:  # asked but never claimed: the claim happens under this lock, so its process died in between
            started = t.datetime_start.timestamp() if t.datetime_start else now
            dead, who = now - started > GRACE_S or ctx.storage_description.endswith(".journal"), "unknown"
        if not dead:
            continue
        reason = f"worker {who} died while the trial was running; failed when the study was resumed"
        tid = trial_id(ctx, t.number)
        ctx.storage.set_trial_user_attr(tid, ATTR_FAIL_KIND, "dead_worker")
        ctx.storage.set_trial_user_attr(tid, ATTR_FAIL_REASON, reason)
        ctx.storage.set_trial_state_values(tid, TrialState.FAIL)
        if run_id := attrs.get(ATTR_RUN):
            with contextlib.suppress(Exception):
                end_child(mlflow_client(ctx.params), run_id, "FAIL", "FAILED", reason)
        failed.append(t.number)
    return failed


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
    for index, device in enumerate(worker_devices(n, accelerator)):
        env = dict(os.environ)
        env.setdefault("AELAB_WORKERS", str(n))  # N workers x all cores each would oversubscribe the CPU
        env[SWITCH_ENV] = "0"  # started together: a warm server would only arrive after them (aelab.warm)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        cmd = [sys.executable, "-m", "aelab.cli", "tune", *argv, "--workers", "1", "--no-summary"]
        if index > 0:  # one progress bar in the terminal: the others would draw over it (not part of the study)
            cmd += ["--set", "train.progress_bar=false"]
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
