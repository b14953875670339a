"""Evaluation results into MLflow without reopening the training runs.

Each variant's training run (found by its model file's digest, `aelab.training.lookup`) receives the metrics as
`eval/*` and its figures through the client API, which leaves the run's status and end time alone: the duration
shown is the training's. PCA and the raw inputs get runs of their own (tag `aelab.role=baseline`) with the same
`eval/*` keys, so MLflow's chart view compares the variants against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aelab.config import Params
from aelab.paths import MODEL_FILE
from aelab.tracking import run_tags
from aelab.training.lookup import find_training_run
from aelab.training.mlrun import describe_experiment

if TYPE_CHECKING:
    from aelab.evaluation.study import Outputs

BASELINES = ("pca", "raw")
STAGE = "evaluate"


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(f"eval/{k}", float(v), now, 0) for k, v in sorted(metrics.items())]
    for start in range(0, len(batch), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])


def log_files(client: Any, run_id: str, files: list[tuple[Path, str]]) -> None:
    for path, artifact_path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def into_training_run(
    client: Any, experiment: str, model_file: Path, metrics: Mapping[str, float], files: list[tuple[Path, str]]
) -> str | None:
    """`eval/*` and the files into the run that trained `model_file`; None when no run has it."""
    run = find_training_run(client, experiment, model_file)
    if run is None:
        return None
    log_metrics(client, run.info.run_id, metrics)
    log_files(client, run.info.run_id, files)
    return run.info.run_id


def baseline_run(
    client: Any,
    experiment: str,
    method: str,
    metrics: Mapping[str, float],
    files: list[tuple[Path, str]],
    artifact_location: str | None = None,
) -> str:
    """A finished run named after the baseline, holding its `eval/*` metrics and files."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location)
    describe_experiment(client, experiment_id)
    tags = {**run_tags(method, STAGE), "aelab.role": "baseline"}
    run = client.create_run(experiment_id, run_name=method, tags=tags)
    log_metrics(client, run.info.run_id, metrics)
    log_files(client, run.info.run_id, files)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def log_evaluation(params: Params, results: dict, outputs: Outputs, models_dir: Path, metrics_file: Path) -> list[str]:
    """Each variant's metrics (as `eval/...`), its figures and the shared tables into its training run (found by
    its model file), and PCA and raw inputs as baseline runs of their own (`aelab.evaluation.runs`)."""
    import mlflow
    from rich.console import Console

    from aelab.evaluation.study import scratch_models
    from aelab.tracking import artifact_location, check_tracking_uri, is_local_store, tracking_uri

    uri = tracking_uri(params.tracking)
    check_tracking_uri(uri)  # a server that is gone: one line within seconds, not minutes of retries
    client = mlflow.MlflowClient(uri)
    experiment = params.tracking.experiment
    logged = []
    folders = scratch_models(models_dir, list(results))
    for method, metrics in results.items():
        files = [
            (path, str(path.parent.relative_to(outputs.root.parent)))
            for path in outputs.by_method.get(method, []) + outputs.by_method.get("all", [])
        ] + [(metrics_file, "evaluation")]
        if method in BASELINES:
            location = artifact_location() if is_local_store(uri) else None
            baseline_run(client, experiment, method, metrics, files, location)
            logged.append(method)
            continue
        model_file = folders.get(method, models_dir / method) / MODEL_FILE
        if not model_file.exists():
            continue
        if into_training_run(client, experiment, model_file, metrics, files) is None:
            Console(stderr=True).print(f"{method}: no MLflow run wrote {model_file}; metrics kept in {metrics_file}")
            continue
        logged.append(method)
    return logged
