"""The real `dvc repro` in a temporary copy of the repository, with tiny settings."""

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from aelab.config import VARIANTS
from tests.conftest import copy_repo

pytestmark = pytest.mark.slow

MLP_VARIANTS = ("undercomplete", "sparse", "denoising")


def _run(args, cwd):
    # The project's own store: no tracking URI or project root inherited from the test process.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "AELAB_PROJECT_ROOT")}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    copy_repo(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(max_epochs=3, batch_size=128)
    for variant in MLP_VARIANTS:
        params["variants"][variant]["hidden_dims"] = [32, 8] if variant != "sparse" else [80]
    for variant in ("stacked", "conv", "stacked_conv"):  # their own epochs
        params["variants"][variant].update(max_epochs=3, **({"pretrain_epochs": 1} if "stacked" in variant else {}))
    params["tune"].update(n_trials=2, max_epochs=2)
    params["oneclass"]["max_epochs"] = 10
    params["tune"]["space"]["hidden_units"] = {"low": 16, "high": 96, "log": True}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run(["dvc", "repro"], project)
    return project, output


def test_repro_runs_every_stage_and_writes_outputs(repro):
    project, output = repro
    for stage in (
        "prepare",
        *(f"train@{v}" for v in VARIANTS),
        *(f"reduce@{v}" for v in VARIANTS),
        "reduce_pca",
        "tune",
        "train_tuned",
        "reduce_tuned",
        "evaluate",
        "oneclass",
    ):
        assert f"Running stage '{stage}'" in output
    for variant in VARIANTS:
        assert (project / "data/models" / variant / "model.pt").exists()
    kept = json.loads((project / "data/models/oneclass/metrics.json").read_text())
    assert kept["normal"] == [0] and kept["auroc"] > 0.9  # digit 0 against the other nine
    with np.load(project / "data/codes/undercomplete/codes.npz") as codes:
        assert codes["train_codes"].shape[1] == 8 and codes["test_reconstruction"].shape[1] == 64
    table = pd.read_csv(project / "data/codes/pca/test.csv")
    assert list(table.columns) == [*(f"code_{i}" for i in range(8)), "label"]
    assert not list(project.glob("*.ckpt")) and not (project / "lightning_logs").exists()


def test_metrics_show_lists_every_method(repro):
    project, _ = repro
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], project))
    files = shown[""]["data"]
    metrics = {Path(path).stem: found["data"] for path, found in files.items() if path.startswith("data/metrics/")}
    for method in (*VARIANTS, "tuned", "pca", "stacked-scratch"):
        assert 0 < metrics[method]["mse"] < 0.2
        assert 0.5 < metrics[method]["probe"] <= 1
    assert metrics["raw"]["probe"] > 0.9


def test_second_repro_does_nothing(repro):
    project, _ = repro
    output = _run(["dvc", "repro"], project)
    assert "Running stage" not in output
    assert "up to date" in _run(["dvc", "status"], project)


def test_one_mlflow_run_per_variant(repro):
    project, _ = repro
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    every = mlflow.search_runs(experiment_names=["aelab"], output_format="list")
    baselines = [r for r in every if r.data.tags.get("aelab.role") == "baseline"]  # made by evaluate
    assert sorted(r.info.run_name for r in baselines) == ["pca", "raw"]
    assert all("eval/probe_accuracy" in r.data.metrics for r in baselines)
    runs = [r for r in every if r.data.tags.get("aelab.role") != "baseline"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]  # the stacked from-scratch baseline
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.run_name for r in parents) == sorted([*VARIANTS, "tuned"])
    assert [r.info.run_name for r in children] == ["stacked/scratch"]
    assert all(r.info.status == "FINISHED" and "val/loss" in r.data.metrics for r in runs)
    # evaluate logged the baseline's figures beside the pre-trained variant's, each into its own run
    assert {"eval/recon_mse", "eval/probe_accuracy"} <= set(children[0].data.metrics)
    assert (project / "mlruns" / "artifacts").is_dir()


def test_changing_one_variant_reruns_only_its_branch(repro):
    project, _ = repro
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["variants"]["sparse"]["beta"] = 0.25
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the settings stage resolves what each variant reads; evaluate reads every variant's params (the one-class
    # models are trained like the variants)
    assert set(json.loads(_run(["dvc", "status", "--json"], project))) == {"settings", "evaluate"}
    _run(["dvc", "repro", "settings"], project)
    # its own branch only: train@sparse (reduce@sparse follows from its output); no other variant is touched
    assert set(json.loads(_run(["dvc", "status", "--json"], project))) == {"train@sparse", "evaluate"}
    # train.max_epochs reaches the variants that train for it, not those with their own max_epochs
    params["train"]["max_epochs"] = 2  # the test project trains for 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "settings"], project)
    changed = set(json.loads(_run(["dvc", "status", "--json"], project)))
    assert {"train@undercomplete", "train@sparse", "train_tuned"} <= changed
    assert not changed & {"train@stacked", "train@conv", "train@stacked_conv"}


def test_tune_study_lives_outside_dvc_and_a_larger_budget_continues_it(repro):
    project, _ = repro
    journals = list((project / "data" / "studies").glob("*.journal"))
    assert len(journals) == 1
    assert "data/studies" not in (project / "dvc.lock").read_text()
    best = yaml.safe_load((project / "data/tune/best_params.yaml").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"]["n_trials"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "tune"], project)
    assert list((project / "data" / "studies").glob("*.journal")) == journals
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journals[0])))
    study = optuna.load_study(study_name=best["study"], storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2], "the two earlier trials are kept, one is added"
    assert yaml.safe_load((project / "data/tune/best_params.yaml").read_text())["study"] == best["study"]
