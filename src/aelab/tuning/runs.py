"""The study's MLflow runs: one parent run per study, one child run per trial, ended as the trial ended."""

from __future__ import annotations

import contextlib
from typing import Any

from optuna.trial import TrialState

from aelab.config import Params, flatten
from aelab.tracking import (
    artifact_location,
    check_tracking_uri,
    log_params,
    redact_text,
    run_tags,
    tracking_uri,
    uninterruptible,
)
from aelab.training.mlrun import describe_experiment
from aelab.tuning.study import ATTR_FAIL_KIND, ATTR_FAIL_REASON, ATTR_PARENT_RUN, UNFINISHED, StudyContext

TUNE_NOTE = (
    "aelab tune: one parent run per Optuna study (tag optuna.study_name; best params and plots), one child run per "
    "trial (tags optuna.trial_number, optuna.trial_state). optuna-dashboard opens the study journal in data/studies/."
)


def mlflow_client(params: Params):
    from mlflow import MlflowClient

    uri = tracking_uri(params.tracking)
    check_tracking_uri(uri)  # a bad URI or a silent server: one line in seconds, not minutes of retries
    return MlflowClient(uri)


def experiment_id(client: Any, name: str) -> str:
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

    client = mlflow_client(ctx.params)
    run_id = ctx.study.user_attrs.get(ATTR_PARENT_RUN)
    if run_id:
        with contextlib.suppress(MlflowException):
            client.get_run(run_id)
            return run_id
    study_experiment = experiment_id(client, ctx.experiment)
    describe_experiment(client, study_experiment, TUNE_NOTE)
    run = client.create_run(
        study_experiment,
        run_name=ctx.name,
        tags={
            "aelab.role": "study",
            "optuna.study_name": ctx.name,
            "optuna.storage": ctx.storage_description,
            **run_tags(ctx.params.tune.variant, "tune"),
        },
    )

    tune_params = {f"tune.{k}": v for k, v in flatten(ctx.params.tune.model_dump(mode="json")).items()}
    tune_params.update({"seed": ctx.params.seed, "search_digest": ctx.digest, "base_variant": ctx.params.tune.variant})
    log_params(client, run.info.run_id, tune_params)  # redacted: tune.storage may hold a database password
    ctx.study.set_user_attr(ATTR_PARENT_RUN, run.info.run_id)
    return run.info.run_id


def end_child(client: Any, run_id: str, state: str, mlflow_status: str, reason: str | None = None) -> None:
    with uninterruptible():
        client.set_tag(run_id, "optuna.trial_state", state)
        if reason:
            client.set_tag(run_id, "fail_reason", redact_text(reason)[:5000])
        client.set_terminated(run_id, mlflow_status)


TRIAL_RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}


def close_orphaned_runs(ctx: StudyContext) -> list[str]:
    """End the MLflow runs still RUNNING for trials that Optuna has finished.

    A trial's run is ended right after the trial, but a process killed (or a store unavailable) at that moment
    leaves it RUNNING; resuming the study brings MLflow back in line with the study, which is the record.
    """
    client = mlflow_client(ctx.params)
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
        end_child(client, run.info.run_id, trial.state.name, status, trial.user_attrs.get(ATTR_FAIL_REASON))
        closed.append(run.info.run_id)
    return closed
