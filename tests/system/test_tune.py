"""`aelab tune` as real processes: Ctrl-C and SIGKILL during a trial, then resume; two parallel workers."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from optuna.trial import TrialState

from aelab.cli import main as cli_main
from aelab.config import validate_params
from aelab.paths import BEST_PARAMS_FILE
from tests.conftest import HOOKS
from tests.helpers import finished, load_study, tiny_raw, tune_runs

pytestmark = [pytest.mark.slow, pytest.mark.project(params=tiny_raw(), prepared=True)]


def start_tune(project, *args, hold_fit=None):
    """`aelab tune` as a real process; `hold_fit=K`: its K-th trial stops in its first training batch and waits
    (see tests/hooks/sitecustomize.py) until the test interrupts or kills it."""
    env = dict(os.environ)
    if hold_fit is not None:
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(HOOKS), env.get("PYTHONPATH")])),
            AELAB_TEST_HOLD_FIT=str(hold_fit),
            AELAB_TEST_HOLD_FILE=str(project / "held"),
        )
    return subprocess.Popen(
        [sys.executable, "-m", "aelab.cli", "tune", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the search")


def test_interrupted_and_killed_searches_resume_to_the_exact_budget(project):
    raw = tiny_raw(n_trials=5, max_epochs=2, pruner={"kind": "none"})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = validate_params(raw)
    held = project / "held"

    # Ctrl-C during a trial's training (its second, held in its first batch): the trial is marked failed
    # (interrupted), the process exits 130
    proc = start_tune(project, "--n-trials", "5", hold_fit=2)
    wait_for(held.exists, proc)
    study = load_study(project, params)
    assert finished(study) == 1
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output[-2000:]
    assert "re-run the command to resume" in output
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["aelab.fail_kind"] == "interrupted"
    # SIGKILL during a trial (the third of the resumed search): the trial stays RUNNING in the journal
    held.unlink()
    proc = start_tune(project, "--n-trials", "5", hold_fit=3)
    wait_for(held.exists, proc)
    assert finished(study) == 3
    proc.kill()
    proc.wait()
    left = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(left) == 1
    # resuming fails the dead worker's trial and runs exactly the missing trials
    assert cli_main(["tune", "--n-trials", "5"]) == 0
    trials = study.get_trials()
    assert finished(study) == 5
    assert trials[left[0].number].state == TrialState.FAIL
    assert trials[left[0].number].user_attrs["aelab.fail_kind"] == "dead_worker"
    killed_run = next(r for r in tune_runs(project) if r.data.tags.get("optuna.trial_number") == str(left[0].number))
    assert killed_run.info.status == "FAILED"
    statuses = {r.info.status for r in tune_runs(project) if r.data.tags.get("aelab.role") == "trial"}
    assert "RUNNING" not in statuses


def test_two_workers_share_one_study_exactly(project):
    result = subprocess.run(
        [sys.executable, "-m", "aelab.cli", "tune", "--workers", "2", "--n-trials", "6"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    params = validate_params(tiny_raw(n_trials=6))
    study = load_study(project, params)
    trials = study.get_trials()
    assert finished(study) == 6 and len(trials) == 6, [t.state for t in trials]
    assert len({t.user_attrs["aelab.pid"] for t in trials}) == 2, "both workers ran trials"
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6, "no point proposed twice"
    runs = tune_runs(project)
    parent = [r for r in runs if r.data.tags.get("aelab.role") == "study"]
    children = [r for r in runs if r.data.tags.get("aelab.role") == "trial"]
    assert len(parent) == 1 and len(children) == 6
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in children)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == list(range(6))
    assert BEST_PARAMS_FILE.exists()
