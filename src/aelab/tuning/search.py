"""`aelab tune` as a library: open the study (storage reachable, same search as before, parent run made), run
the trials here or in worker processes, then write the best params.

How it fits together (docs/tuning.md has the user's view):
- Storage: a journal file `<project>/data/studies/<study>.journal` (never a DVC output; resolved from the real
  project root, so `dvc exp run --temp` writes into it too) or any RDB URL (with Optuna's heartbeat).
- Study name: by default `<variant>-<digest>` of everything that changes a trial's result, except the budget. A
  changed search space starts a fresh study; `-S tune.n_trials=30` continues the existing one.
- Budget: `tune.n_trials` finished (complete + pruned) trials of the study, earlier runs included. Each worker
  counts and asks for its next trial under a host-local file lock, so workers on one machine never overshoot;
  between machines the trial numbers decide, and a trial beyond the budget is failed before it trains.
- Dead workers: a RUNNING trial whose process (same host) is gone is failed at the next start; RDB storages
  also get Optuna's heartbeat, which fails stale trials of other machines.
"""

from __future__ import annotations

import warnings

import optuna

from aelab.config import Params
from aelab.data.prepared import PreparedData
from aelab.errors import ConfigError
from aelab.paths import BEST_PARAMS_FILE
from aelab.tuning.runs import close_orphaned_runs, ensure_parent_run
from aelab.tuning.space import check_space, search_digest, study_name
from aelab.tuning.storage import host_lock, make_pruner, make_sampler, open_storage
from aelab.tuning.study import ATTR_DIGEST, FINISHED, StudyContext, counts, tune_experiment
from aelab.tuning.summary import console, summarise
from aelab.tuning.worker import launch_workers, run_worker


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
        if study.metric_names != list(params.tune.objectives):  # named in optuna-dashboard and the plots
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(params.tune.objectives))
        ctx = StudyContext(params, data, name, digest, storage, description, study, experiment=tune_experiment(params))
        ctx.parent_run_id = ensure_parent_run(ctx)
    return ctx


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
    if done > cfg.n_trials and BEST_PARAMS_FILE.exists():
        console.print(
            f"study {ctx.name}: {done} trials finished already, more than the budget tune.n_trials={cfg.n_trials}; "
            f"nothing to run, {BEST_PARAMS_FILE} left as it is",
            soft_wrap=True,
        )
        return None
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
        f"best trial {best['trial']}: {best['values']} -> {BEST_PARAMS_FILE}",
        soft_wrap=True,
    )
    return result
