"""How aelab reads in the tools around it: DVC metrics, MLflow runs, Optuna studies and the terminal."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from aelab.evaluation.headline import headline, write_headlines

METHODS = (
    "undercomplete",
    "sparse",
    "denoising",
    "stacked",
    "stacked-scratch",
    "conv",
    "stacked_conv",
    "tuned",
    "pca",
    "raw",
)


def _full_metrics(i: int) -> dict[str, float]:
    """The shape of one method's entry in `all_metrics.json` (many more keys than the headline)."""
    return {
        "recon_mse": 0.0123456789 + i,
        "recon_sse": 0.79,
        "explained_variance": 0.81234,
        "code/effective_dims": 3.8,
        "probe_accuracy": 0.9361111111111111,
        "knn_accuracy": 0.9638888888888889,
        "tsne/trustworthiness": 0.97,
        "oneclass/auroc_mean": 0.9980412886954223,
        "oneclass/auroc/3": 0.99,
        "denoise/gaussian_0.1/psnr": 17.7,
        "denoise/masking_0.3/psnr": 19.1,
        "denoise/masking_0.3/ssim": 0.6,
    }


def test_headline_keeps_five_values_and_the_best_psnr():
    found = headline(_full_metrics(0))
    assert found == {
        "auroc": pytest.approx(0.9980412886954223),
        "knn": pytest.approx(0.9638888888888889),
        "mse": pytest.approx(0.0123456789),
        "probe": pytest.approx(0.9361111111111111),
        "psnr": pytest.approx(19.1),
    }
    assert headline({"probe_accuracy": 0.9, "knn_accuracy": 0.8}) == {"knn": 0.8, "probe": 0.9}


def test_headline_files_replace_stale_methods(tmp_path):
    folder = tmp_path / "metrics"
    write_headlines({"gone": _full_metrics(0)}, folder)
    written = write_headlines({"pca": _full_metrics(0), "empty": {"code_dim": 12}}, folder)
    assert written == [folder / "pca.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["pca.json"]
    assert json.loads((folder / "pca.json").read_text())["mse"] == pytest.approx(0.0123456789)


@pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc and git")
def test_dvc_metrics_show_fits_200_columns(tmp_path):
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: 'true'\n    metrics:\n      - data/metrics:\n          cache: false\n"
    )
    write_headlines({m: _full_metrics(i) for i, m in enumerate(METHODS)}, tmp_path / "data" / "metrics")
    table = run("dvc", "metrics", "show").splitlines()
    assert len(table) == 1 + len(METHODS)
    assert table[0].split() == ["Path", "auroc", "knn", "mse", "probe", "psnr"]
    assert max(len(line) for line in table) <= 200, table[0]


@pytest.fixture
def trained(prepared_digits, tiny_params, monkeypatch):
    """One tiny pipeline training run, as under `dvc exp run` (which sets DVC_EXP_NAME)."""
    import mlflow

    from aelab.tracking import tracking_uri
    from aelab.training.run import train_variant

    monkeypatch.setenv("DVC_EXP_NAME", "quick-exp")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    result = train_variant(tiny_params, "undercomplete", prepared_digits)
    client = mlflow.MlflowClient(tracking_uri(tiny_params.tracking))
    return client, client.get_run(result.run_id)


def test_training_run_tags_params_dataset_and_curves(trained):
    client, run = trained
    tags = run.data.tags
    assert tags["aelab.variant"] == "undercomplete" and tags["aelab.stage"] == "train@undercomplete"
    assert tags["dvc.exp_name"] == "quick-exp"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head and "git_commit" not in tags
    keys = set(run.data.params)
    assert {"seed", "train.lr", "model.loss", "data.source", "variants.undercomplete.hidden_dims"} <= keys
    assert not [k for k in keys if k.startswith(("variants.sparse", "variants.conv", "evaluate.", "tune."))]
    assert not keys & {"lr", "hidden_dims", "loss", "seed_", "variant"}  # no unprefixed Lightning duplicates
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits-train"]
    assert "mlflow.note.content" in client.get_experiment(run.info.experiment_id).tags
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    models = client.search_logged_models([run.info.experiment_id])
    assert [m.name for m in models if m.source_run_id == run.info.run_id] == ["undercomplete"]
    folder = Path("data/models/undercomplete")
    assert not (folder / "run.json").exists()
    assert len((folder / "dvclive/plots/metrics/val/loss.tsv").read_text().splitlines()) == 1 + 2  # header, 2 epochs


def test_evaluation_keeps_the_training_runs_end_time_and_adds_baselines(trained):
    from aelab.evaluation.runs import baseline_run, into_training_run

    client, run = trained
    model_file = Path("data/models/undercomplete/model.pt")
    assert into_training_run(client, "aelab", model_file, {"probe_accuracy": 0.9}, []) == run.info.run_id
    after = client.get_run(run.info.run_id)
    assert after.info.end_time == run.info.end_time and after.info.status == "FINISHED"
    assert after.data.metrics["eval/probe_accuracy"] == pytest.approx(0.9)
    pca = client.get_run(baseline_run(client, "aelab", "pca", {"probe_accuracy": 0.8}, []))
    assert pca.info.run_name == "pca" and pca.data.tags["aelab.role"] == "baseline"
    assert pca.data.metrics["eval/probe_accuracy"] == pytest.approx(0.8) and pca.info.status == "FINISHED"


def test_tune_with_a_budget_below_the_finished_trials_says_so_and_keeps_best_params(prepared_digits, capsys):
    import optuna

    from aelab.config import validate_params
    from aelab.paths import BEST_PARAMS_FILE
    from aelab.tuning import search
    from tests.conftest import TINY_PARAMS

    Path("dvc.yaml").write_text("stages: {}\n")
    tune = {
        "max_epochs": 1,
        "sampler": {"n_startup_trials": 2},
        "pruner": {"kind": "none"},
        "space": {"hidden_units": {"low": 16, "high": 64}},
    }
    search.tune(validate_params({**TINY_PARAMS, "tune": {**tune, "n_trials": 2}}), prepared_digits)
    written = BEST_PARAMS_FILE.read_text()
    BEST_PARAMS_FILE.write_text(written + "# untouched\n")
    capsys.readouterr()
    assert search.tune(validate_params({**TINY_PARAMS, "tune": {**tune, "n_trials": 1}}), prepared_digits) is None
    said = [line for line in capsys.readouterr().err.splitlines() if "more than the budget" in line]
    assert len(said) == 1 and "2 trials finished already" in said[0] and "tune.n_trials=1" in said[0]
    assert BEST_PARAMS_FILE.read_text() == written + "# untouched\n"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(next(Path("data/studies").glob("*.journal"))))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    assert optuna.load_study(study_name=summary.study_name, storage=storage).metric_names == ["val/mse"]


def test_version_flag_prints_the_installed_version(capsys):
    from importlib.metadata import version

    from aelab.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"aelab {version('aelab')}"


def test_tune_help_names_both_tunable_variants(capsys):
    from aelab.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    assert "sparse or conv variant" in capsys.readouterr().out


def test_progress_bar_follows_the_terminal_unless_set(monkeypatch):
    import io
    import sys

    from aelab.training.trainer import show_progress

    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.delenv("CI", raising=False)
    assert show_progress(None) is True and show_progress(False) is False
    monkeypatch.setenv("CI", "true")
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file: not a terminal
    assert show_progress(None) is False
