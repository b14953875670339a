"""`aelab tune`: tiny Optuna searches on digits (few epochs) in a scratch project, in-process."""

import signal
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from aelab.cli import main as cli_main
from aelab.config import validate_params
from aelab.errors import ConfigError, TrainingError
from aelab.paths import BEST_PARAMS_FILE
from aelab.stages import train as train_stage
from aelab.tuning import objective, search, storage
from aelab.tuning import study as tuning_study
from tests.helpers import TINY_TUNE, finished, load_study, prepared, states, tiny_raw, tune_runs

pytestmark = pytest.mark.project(params=tiny_raw(), prepared=True)


def test_tiny_search_with_pruning_completes_and_tracks_every_trial(project):
    params = validate_params(tiny_raw(n_trials=6))
    result = search.tune(params, prepared(project))
    study = load_study(project, params)
    assert finished(study) == 6 and TrialState.FAIL not in states(study)
    assert TrialState.PRUNED in states(study), "the median pruner should stop at least one of six trials"
    assert result["best"]["values"]["val/mse"] == pytest.approx(study.best_value)
    # MLflow: one parent per study, one child per trial, pruned trials KILLED (not FAILED) and tagged
    runs = tune_runs(project)
    parents = [r for r in runs if r.data.tags.get("aelab.role") == "study"]
    children = [r for r in runs if r.data.tags.get("aelab.role") == "trial"]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert study.user_attrs[tuning_study.ATTR_PARENT_RUN] == parent.info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.data.tags["optuna.trial_state"] == trial.state.name
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]
        assert run.data.params["hidden_units"] == str(trial.params["hidden_units"])
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/mse")
        assert len(history) == len(trial.intermediate_values) >= 1
        if trial.state == TrialState.COMPLETE:
            assert run.data.metrics["trial/val_mse"] == pytest.approx(trial.value)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best.hidden_units"] == str(study.best_params["hidden_units"])
    assert mlflow.MlflowClient().get_run(parent.info.run_id).data.metrics["best/val_mse"] == pytest.approx(
        study.best_value
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png", "plots/contour_hidden_units_rho.png"} <= (
        artifacts
    )


def test_rerun_continues_the_study_and_counts_earlier_trials(project):
    search.tune(validate_params(tiny_raw(n_trials=2)), prepared(project))
    params = validate_params(tiny_raw(n_trials=3))
    search.tune(params, prepared(project))
    study = load_study(project, params)
    assert len(study.trials) == 3 and finished(study) == 3
    assert len([r for r in tune_runs(project) if r.data.tags.get("aelab.role") == "study"]) == 1
    search.tune(params, prepared(project))  # budget already met: no new trial
    assert len(load_study(project, params).trials) == 3


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(project, monkeypatch):
    real_fit = objective.fit_module

    def fit_that_fails_once(params, variant, data, **kwargs):
        if params.variants.sparse.hidden_dims == failing["dims"]:
            raise TrainingError("sparse: loss became nan at epoch 0, step 3")
        return real_fit(params, variant, data, **kwargs)

    failing = {"dims": None}
    original_suggest = objective.suggest

    def suggest(trial, cfg, default_lr):
        values = original_suggest(trial, cfg, default_lr)
        if trial.number == 1:
            failing["dims"] = [values["hidden_units"]]
        return values

    monkeypatch.setattr(objective, "fit_module", fit_that_fails_once)
    monkeypatch.setattr(objective, "suggest", suggest)
    params = validate_params(tiny_raw(n_trials=3, pruner={"kind": "none"}))
    search.tune(params, prepared(project))
    study = load_study(project, params)
    assert states(study) == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "loss became nan" in study.trials[1].user_attrs["fail_reason"]
    failed_run = next(r for r in tune_runs(project) if r.data.tags.get("optuna.trial_number") == "1")
    assert failed_run.info.status == "FAILED" and "loss became nan" in failed_run.data.tags["fail_reason"]


def test_best_params_file_feeds_the_tuned_variant(project):
    raw = {**tiny_raw(n_trials=2, pruner={"kind": "none"}), "tracking": {"log_model": False}}
    params = validate_params(raw)
    search.tune(params, prepared(project))
    best = yaml.safe_load(BEST_PARAMS_FILE.read_text())
    study = load_study(project, params)
    assert best["trial"] == study.best_trial.number and best["variant"] == "sparse"
    assert best["params"]["variants"]["sparse"]["hidden_dims"] == [study.best_params["hidden_units"]]
    assert best["params"]["train"]["lr"] == study.best_params["lr"]
    train_stage.main(params, "tuned")
    model = torch.load(Path("data/models/tuned/model.pt"), weights_only=True)
    assert model["variant"] == "sparse"
    assert model["hparams"]["hidden_dims"] == [study.best_params["hidden_units"]]
    assert model["hparams"]["beta"] == study.best_params["beta"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["aelab"], output_format="list")
    assert [r.info.run_name for r in runs] == ["tuned"] and runs[0].data.tags["aelab.stage"] == "train_tuned"


def test_conv_search_over_blocks_and_widths_feeds_the_tuned_variant(project):
    space = {
        **TINY_TUNE["space"],
        "blocks": {"low": 1, "high": 2},
        "channels": {"low": 4, "high": 16, "log": True},
        "block": {"kernel": 3, "stride": 2, "norm": "batch"},
        "hidden_units": {"low": 4, "high": 16},
    }
    raw = {**tiny_raw(variant="conv", n_trials=3, max_epochs=1, pruner={"kind": "none"}, space=space)}
    raw["tracking"] = {"log_model": False}
    params = validate_params(raw)
    search.tune(params, prepared(project))
    study = load_study(project, params)
    assert study.study_name.startswith("conv-") and finished(study) == 3
    assert {"blocks", "channels", "hidden_units", "rho", "beta", "lr"} == set(study.best_params)
    best = yaml.safe_load(BEST_PARAMS_FILE.read_text())
    conv = best["params"]["variants"]["conv"]
    assert best["variant"] == "conv" and len(conv["blocks"]) == study.best_params["blocks"]
    assert [b["channels"] for b in conv["blocks"]] == [
        study.best_params["channels"] * 2**i for i in range(len(conv["blocks"]))
    ]
    assert conv["blocks"][0]["norm"] == "batch" and conv["code_dim"] == study.best_params["hidden_units"]
    assert conv["sparsity"] == {"rho": study.best_params["rho"], "beta": study.best_params["beta"]}
    train_stage.main(params, "tuned")
    model = torch.load(Path("data/models/tuned/model.pt"), weights_only=True)
    assert model["variant"] == "conv" and model["hparams"]["hidden_dims"] == [study.best_params["hidden_units"]]
    assert len(model["hparams"]["blocks"]) == study.best_params["blocks"]


def test_tuned_variant_without_a_search_is_a_clear_error(project):
    with pytest.raises(ConfigError, match=r"best_params.yaml: not found; run `aelab tune`"):
        train_stage.main(validate_params(tiny_raw()), "tuned")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.space.rho={low: 0.3, high: 0.1}", "tune.space.rho: empty or inverted range: low 0.3 > high 0.1"),
        ("tune.space.hidden_units={low: 64, high: 8}", "tune.space.hidden_units: empty or inverted range"),
        (
            "tune.space.units={low: 8, high: 64}",
            "tune.space.units: unknown key; allowed: beta, block, blocks, channels, decoder, depth, hidden_units",
        ),
        ("tune.space.rho=1.5", "rho must lie in (0.0, 1.0)"),
        ("tune.objectives=[val/mse, active_units]", "cannot prune a multi-objective search"),
        ("tune.storage=sqlite:////nonexistent-dir/x/optuna.db", "tune.storage: cannot open sqlite:////nonexistent"),
        (
            "tune.storage=postgresql://aelab:secret@127.0.0.1:1/optuna",
            "tune.storage: cannot open postgresql://aelab:***",
        ),
        ("tune.storage=not-a-storage", "neither a path ending in .journal nor an RDB URL"),
        (
            "tune.space.channels={low: 4, high: 16}",
            "tune: space.channels is searched for tune.variant conv, not sparse",
        ),
        (
            "tune.variant=conv --set tune.space.depth={low: 1, high: 2}",
            "tune: space.depth is searched for tune.variant sparse, not conv",
        ),
        (
            "tune.variant=conv --set tune.space.blocks={low: 1, high: 4}",
            "tune.space (with blocks 4).blocks[3].stride: stride 2 on the 1x1 input of block 3 shrinks the image",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_trial(project, capsys, override, message):
    assert cli_main(["tune", *(arg for part in override.split(" --set ") for arg in ("--set", part))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "secret" not in err
    assert not list(project.glob("data/studies/*.journal")) or override.startswith("tune.storage=sqlite")
    assert not BEST_PARAMS_FILE.exists()


def test_sqlite_with_parallel_workers_is_refused(project, capsys):
    assert cli_main(["tune", "--workers", "2", "--set", "tune.storage=sqlite:///optuna.db"]) == 2
    assert "SQLite cannot be shared by parallel workers" in capsys.readouterr().err


def test_changed_settings_under_the_same_study_name_are_refused(project):
    search.tune(validate_params(tiny_raw(n_trials=1, study="mine")), prepared(project))
    with pytest.raises(ConfigError, match="study 'mine' .* was made with other search settings"):
        search.tune(validate_params(tiny_raw(n_trials=1, study="mine", max_epochs=3)), prepared(project))


def test_multi_objective_search_reports_a_pareto_front(project):
    params = validate_params(
        tiny_raw(n_trials=3, max_epochs=2, objectives=["val/mse", "active_units"], pruner={"kind": "none"})
    )
    result = search.tune(params, prepared(project))
    study = load_study(project, params)
    assert len(study.directions) == 2 and finished(study) == 3
    assert result["best"]["trial"] in {t.number for t in study.best_trials}
    parent = next(r for r in tune_runs(project) if r.data.tags.get("aelab.role") == "study")
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert "pareto_front.json" in paths
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto_front.png" in plots


def test_hyperband_pruner_search_completes(project):
    params = validate_params(tiny_raw(n_trials=3, pruner={"kind": "hyperband", "min_resource": 1}))
    search.tune(params, prepared(project))
    study = load_study(project, params)
    assert isinstance(storage.make_pruner(params.tune), optuna.pruners.HyperbandPruner)
    assert finished(study) == 3 and TrialState.FAIL not in states(study)


def test_an_rdb_url_is_accepted_as_storage(project):
    url = f"sqlite:///{project / 'optuna.db'}"
    params = validate_params(tiny_raw(n_trials=2, max_epochs=2, storage=url, study="rdb"))
    search.tune(params, prepared(project))
    study = optuna.load_study(study_name="rdb", storage=url)
    assert finished(study) == 2 and not list(project.glob("data/studies/*.journal"))
    assert study.user_attrs[tuning_study.ATTR_PARENT_RUN]


def test_a_trial_asked_beyond_the_budget_is_failed_before_it_trains(project, monkeypatch):
    """What a worker on another machine meets when the others used the budget between its count and its ask."""
    monkeypatch.setattr(objective, "fit_module", lambda *args, **kw: pytest.fail("an over-budget trial must not train"))
    params = validate_params(tiny_raw(n_trials=1))
    ctx = search.open_study(params, prepared(project))
    ctx.study.add_trial(optuna.trial.create_trial(value=0.5))
    ctx.study.optimize(objective.Objective(ctx, budget=1), n_trials=1, catch=(Exception,))
    late = ctx.study.trials[1]
    assert late.state == TrialState.FAIL and late.user_attrs["aelab.fail_kind"] == "over_budget"
    assert not [r for r in tune_runs(project) if r.data.tags.get("aelab.role") == "trial"]


def test_a_run_the_interrupt_could_not_end_is_ended_when_the_study_resumes(project, monkeypatch):
    from mlflow.exceptions import MlflowException

    params = validate_params(tiny_raw(n_trials=2, max_epochs=1, pruner={"kind": "none"}))
    end_child, train = objective.end_child, objective.Objective._train

    def interrupted_training(self, trial, params, run_id):
        raise KeyboardInterrupt

    def store_unavailable(client, run_id, state, mlflow_status, reason=None):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(objective.Objective, "_train", interrupted_training)
    monkeypatch.setattr(objective, "end_child", store_unavailable)
    with pytest.raises(KeyboardInterrupt):  # the interrupt wins over the failed bookkeeping
        search.tune(params, prepared(project))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    study = load_study(project, params)
    assert [t.user_attrs.get(tuning_study.ATTR_FAIL_KIND) for t in study.get_trials()] == ["interrupted"]
    (orphan,) = [r for r in tune_runs(project) if r.data.tags.get("aelab.role") == "trial"]
    assert orphan.info.status == "RUNNING"

    monkeypatch.setattr(objective.Objective, "_train", train)
    monkeypatch.setattr(objective, "end_child", end_child)
    search.tune(params, prepared(project))
    trial_runs = [r for r in tune_runs(project) if r.data.tags.get("aelab.role") == "trial"]
    runs = {r.data.tags["optuna.trial_number"]: r for r in trial_runs}
    assert runs["0"].info.status == "KILLED" and runs["0"].data.tags["optuna.trial_state"] == "FAIL"
    assert finished(study) == 2 and {r.info.status for k, r in runs.items() if k != "0"} == {"FINISHED"}
