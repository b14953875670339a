"""One study as every worker sees it: its context, the attributes it records on trials, its trial counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from aelab.config import Params
from aelab.data.prepared import PreparedData

ATTR_PARENT_RUN = "aelab.mlflow_parent_run_id"


ATTR_DIGEST = "aelab.search_digest"


ATTR_HOST, ATTR_PID, ATTR_PID_START = "aelab.host", "aelab.pid", "aelab.pid_start"


ATTR_RUN = "aelab.mlflow_run_id"


ATTR_FAIL_REASON = "fail_reason"


ATTR_FAIL_KIND = "aelab.fail_kind"
"""error (the trial raised), interrupted (Ctrl-C), dead_worker (process killed), over_budget (parallel race)."""
UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def counts(study: optuna.Study) -> dict[str, int]:
    result = {state.name: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        result[t.state.name] += 1
    return result


def trial_id(ctx: StudyContext, number: int) -> int:
    """The storage's id of trial `number` (Optuna's public storage API; frozen trials do not expose it)."""
    study_id = ctx.storage.get_study_id_from_name(ctx.name)
    return ctx.storage.get_trial_id_from_study_id_trial_number(study_id, number)
