"""The README's "Your own data" section, run as written on a generated table (600 rows, 30 columns, a text
label `status` whose value `benign` is normal), in a scratch folder; the one-class AUROC is reported."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from tests.conftest import copy_repo
from tests.helpers import readme_section
from tests.table_data import write_measurements

pytestmark = pytest.mark.slow


def _run(command: str, cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "AELAB_PROJECT_ROOT")}
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result.stdout + result.stderr


QUICK = {"train": {"max_epochs": 10}, "tracking": {"log_model": False}}
"""Added to the README's file for speed: they shorten `aelab train`; the one-class model keeps its own epochs."""


@pytest.fixture
def project(project):
    """The shared scratch project with the user's CSV and the README's mine.yaml (plus `QUICK`)."""
    params, _ = readme_section()
    write_measurements(project / params["data"]["path"])
    (project / "mine.yaml").write_text(yaml.safe_dump({**params, **QUICK}))
    return project


def test_readme_section_end_to_end(project):
    _, commands = readme_section()
    for command in commands:
        _run(command, project)
    table = pd.read_csv(project / "measurements.csv")
    codes = pd.read_csv(project / "codes.csv")
    assert len(codes) == len(table)
    scores = pd.read_csv(project / "scores.csv")
    assert {"score", "is_anomaly", "status"} <= set(scores.columns) and len(scores) == len(table)
    metrics = json.loads((project / "data/models/oneclass/metrics.json").read_text())
    faulty = (scores["status"] != "benign").to_numpy()
    every_row = roc_auc_score(faulty, scores["score"])
    flagged = scores["is_anomaly"].astype(bool).to_numpy()
    assert np.array_equal(flagged, scores["score"].to_numpy() > metrics["threshold"])
    print(f"one-class AUROC: test rows {metrics['auroc']:.4f}, every row of the CSV {every_row:.4f}")
    assert metrics["auroc"] > 0.85 and every_row > 0.85


def test_dvc_repro_on_the_table(tmp_path):
    """`dvc repro` with the README's keys in params.yaml: the listed variants only, label values in the metrics."""
    from aelab.config import merge_over

    copy_repo(tmp_path)
    mine, _ = readme_section()
    write_measurements(tmp_path / mine["data"]["path"])
    fast = {
        "train": {"max_epochs": 5},
        "variants": {"stacked": {"max_epochs": 3, "pretrain_epochs": 1}},
        "tune": {"n_trials": 2, "max_epochs": 2},
        "evaluate": {"oneclass": {"max_epochs": 5}},
    }
    params = merge_over(merge_over(yaml.safe_load((tmp_path / "params.yaml").read_text()), mine), fast)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run("dvc repro 2>&1", tmp_path)
    assert "train@conv" not in output
    metrics = json.loads((tmp_path / "data/evaluation/all_metrics.json").read_text())
    assert set(metrics) == {*mine["pipeline"]["variants"], "stacked-scratch", "tuned", "pca", "raw"}
    assert {"oneclass/auroc/benign", "oneclass/auroc/faulty"} <= set(metrics["undercomplete"])
    kept = json.loads((tmp_path / "data/models/oneclass/metrics.json").read_text())
    print(f"dvc repro on the table: one-class test AUROC {kept['auroc']:.4f}")
    assert kept["normal"] == ["benign"] and kept["auroc"] > 0.8
