"""The result of a study: the best trial's params file (the `tune` stage's output), plots, the parent run's record."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from aelab.config import TuneConfig
from aelab.errors import TrainingError
from aelab.paths import BEST_PARAMS_FILE
from aelab.tracking import uninterruptible
from aelab.tuning.runs import mlflow_client
from aelab.tuning.space import params_overrides, trial_values
from aelab.tuning.study import FINISHED, StudyContext, counts

console = Console(stderr=True)


def best_trial(study: optuna.Study, objectives: list[str]) -> FrozenTrial:
    """The best trial; for several objectives, the Pareto-optimal trial with the lowest first objective."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise TrainingError(f"study {study.study_name!r}: no trial completed, so there is no best one")
    if len(objectives) == 1:
        return study.best_trial
    return min(study.best_trials, key=lambda t: (t.values[0], t.number))


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
    target: dict[str, Any] = {"target_name": cfg.objectives[0]}  # the axis says what was minimised
    if multi:
        target["target"] = lambda t: t.values[0]
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
        figures[name] = legible(first.figure)
    return figures


def legible(figure: Any) -> Any:
    """Room for Optuna's axis labels and parameter names, which its default size cuts off."""
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, 8.0), max(height, 5.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colorbars of contour plots are not tight_layout-compatible
        figure.tight_layout()
    return figure


@uninterruptible()
def summarise(ctx: StudyContext) -> dict[str, Any]:
    """Best params file, and the parent MLflow run's best params, value, trial table and plots."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric

    cfg = ctx.params.tune
    best = best_trial(ctx.study, cfg.objectives)
    content = write_best(ctx, best)
    state = counts(ctx.study)
    client = mlflow_client(ctx.params)
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
