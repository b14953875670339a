"""A table through the pipeline: prepare, codes with label values, the command line, and the one-class model
kept with its threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from aelab.config import Params, validate_params
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError, DataError
from aelab.evaluation import detector as oneclass
from aelab.evaluation.oneclass import error_weights
from aelab.serving.bundle import read_bundle
from aelab.serving.inference import AutoencoderInference
from aelab.stages.prepare import prepare
from tests.conftest import REPO
from tests.table_data import COLUMNS, TABLE, write_measurements

MLP = ["undercomplete", "sparse", "denoising", "stacked"]


@pytest.fixture
def table(project):
    """The table CSV in the shared scratch project; prepared data goes to its data/prepared."""
    return write_measurements(project / "measurements.csv")


def table_params(path, **sections) -> Params:
    return validate_params({"data": {**TABLE, "path": str(path)}, "pipeline": {"variants": MLP}, **sections})


# ---- prepare and the command line ------------------------------------------------------------------------------
def test_an_image_only_variant_on_a_table_is_refused_by_prepare(table):
    params = validate_params({"data": {**TABLE, "path": str(table)}, "pipeline": {"variants": ["sparse", "conv"]}})
    with pytest.raises(ConfigError) as err:
        prepare(params.data, params.seed, params.pipeline.variants)
    assert str(err.value) == (
        "pipeline.variants: conv needs image data, and this data has no image shape (data.image_shape); "
        "allowed: undercomplete, sparse, denoising, stacked"
    )
    assert not (table.parent / "data" / "prepared").exists()


def _aelab(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "aelab.cli", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_the_cli_says_it_in_one_line(table):
    (table.parent / "mine.yaml").write_text(yaml.safe_dump({"data": {**TABLE, "path": "measurements.csv"}}))
    result = _aelab("prepare", "--params", "mine.yaml", cwd=table.parent)
    assert result.returncode == 2
    assert result.stderr.startswith("aelab: error: pipeline.variants: conv, stacked_conv need image data")
    assert result.stderr.count("\n") == 1


def test_oneclass_command_takes_label_values(table):
    params = table_params(table)
    prepare(params.data, params.seed, MLP)
    (table.parent / "mine.yaml").write_text(yaml.safe_dump({"data": {**TABLE, "path": "measurements.csv"}}))
    result = _aelab("oneclass", "--params", "mine.yaml", "--normal", "benign", "--normal", "ok", cwd=table.parent)
    assert result.returncode == 2
    assert result.stderr == "aelab: error: oneclass.normal: unknown label 'ok'; allowed: benign, faulty\n"


def test_prepare_keeps_column_names_label_values_and_unclipped_rows(table):
    data = prepare(table_params(table).data, 42, MLP)
    assert data.meta["feature_names"] == COLUMNS and data.meta["label_column"] == "status"
    assert data.meta["label_names"] == ["benign", "faulty"] and set(np.unique(data.train.y)) == {0, 1}
    assert data.meta["scaling"]["kind"] == "per_feature" and data.meta["scaling"]["clip"] is False
    assert data.train.x.min() == 0.0 and data.train.x.max() == 1.0
    outside = [s.x for s in (data.val, data.test) if s.x.min() < 0 or s.x.max() > 1]
    assert outside, "validation or test rows beyond the training range keep their values"
    per_column = data.train.x.max(axis=0)
    assert np.allclose(per_column, 1.0)  # every column has its own range (units 0.01 to 1000)


def test_code_tables_carry_label_values(table):
    from aelab.stages.reduce import reduce

    params = table_params(table, reduce={"pca_components": 3})
    folder = reduce(params, "pca", prepare(params.data, params.seed, MLP))
    frame = pd.read_csv(folder / "test.csv")
    assert list(frame.columns) == ["code_0", "code_1", "code_2", "label"]
    assert set(frame["label"]) == {"benign", "faulty"}


# ---- the one-class model ---------------------------------------------------------------------------------------
FAST = {"train": {"max_epochs": 2, "lr": 5.0e-3}, "variants": {"undercomplete": {"hidden_dims": [32, 4]}}}


def test_oneclass_model_threshold_and_test_metrics(table, tmp_path):
    params = table_params(table, oneclass={"normal": ["benign"], "max_epochs": 40}, **FAST)
    data = prepare(params.data, params.seed, MLP)
    model = oneclass.train_oneclass(params, data, root=tmp_path / "ckpt")
    assert model.normal == ["benign"] and model.module.hidden_dims == [32, 4]
    val_scores = oneclass.row_scores(model.module, data.val.x[data.val.y == 0])
    assert model.threshold == pytest.approx(np.quantile(val_scores, 0.95))
    assert (val_scores > model.threshold).mean() == pytest.approx(0.05, abs=0.02)
    m = model.metrics
    assert m["n_test_normal"] + m["n_test_anomaly"] == len(data.test.x) and m["n_test_anomaly"] > 10
    assert m["auroc"] > 0.85, m  # broken correlations reconstruct badly
    assert m["recall"] > 0.3 and m["false_positive_rate"] < 0.15
    # the trained network is cached: another false-positive rate re-thresholds without retraining
    (cached,) = (tmp_path / "ckpt").glob("*/model.pt")
    stamp = cached.stat().st_mtime_ns
    looser = table_params(table, oneclass={"normal": ["benign"], "max_epochs": 40, "false_positive_rate": 0.2}, **FAST)
    again = oneclass.train_oneclass(looser, data, root=tmp_path / "ckpt")
    assert cached.stat().st_mtime_ns == stamp and again.threshold < model.threshold


def test_oneclass_model_with_the_combined_score(table, tmp_path):
    params = table_params(table, oneclass={"normal": ["benign"], "max_epochs": 40, "score": "combined"}, **FAST)
    data = prepare(params.data, params.seed, MLP)
    model = oneclass.train_oneclass(params, data, root=tmp_path / "ckpt")
    normal_val = data.val.x[data.val.y == 0]
    # each part is over its median on the normal validation rows: there, half of each scaled part is below 1
    parts = AutoencoderInference.of(model.module, oneclass=model.score).compute("score_parts", normal_val)
    np.testing.assert_allclose(np.median(parts / model.score["medians"], axis=0), 1.0, rtol=1e-4)
    codes = AutoencoderInference.of(model.module).compute("codes", data.train.x[data.train.y == 0])
    np.testing.assert_allclose(model.score["code_location"], codes.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert model.metrics["auroc"] > 0.85 and model.metrics["score"] == "combined"
    # the bundle scores as the threshold was chosen
    oneclass.save_oneclass(params, model, data, tmp_path / "kept")
    bundle = read_bundle(tmp_path / "kept")
    kept = AutoencoderInference.of(bundle.module, oneclass=bundle.oneclass)
    expected = oneclass.row_scores(model.module, normal_val, model.score)
    np.testing.assert_array_equal(kept.compute("score", normal_val), expected)
    assert (kept.compute("score", normal_val) > bundle.oneclass["threshold"]).mean() == pytest.approx(0.05, abs=0.02)
    # another score re-scores the cached network: standardized weights each feature by its normal training error
    (cached,) = (tmp_path / "ckpt").glob("*/model.pt")
    stamp = cached.stat().st_mtime_ns
    standardized = params.derive({"oneclass": {"score": "standardized"}}, "test")
    again = oneclass.train_oneclass(standardized, data, root=tmp_path / "ckpt")
    assert cached.stat().st_mtime_ns == stamp and again.score.keys() == {"score", "weights"}
    normal_train = data.train.x[data.train.y == 0]
    recon = AutoencoderInference.of(again.module).compute("reconstruction", normal_train)
    np.testing.assert_allclose(again.score["weights"], error_weights(normal_train, recon), rtol=1e-6)
    assert not np.allclose(again.threshold, model.threshold)


def test_oneclass_refuses_what_it_cannot_train(table, tmp_path):
    data = prepare(table_params(table).data, 42, MLP)
    with pytest.raises(ConfigError, match=r"^oneclass.normal: name the normal label value\(s\), e.g. \[benign\]"):
        oneclass.train_oneclass(table_params(table), data, root=tmp_path)
    with pytest.raises(ConfigError, match=r"^oneclass.normal: unknown label 'ok'; allowed: benign, faulty$"):
        oneclass.train_oneclass(table_params(table, oneclass={"normal": ["ok"]}), data, root=tmp_path)
    with pytest.raises(ConfigError, match=r"^oneclass.variant: conv needs image data"):
        oneclass.train_oneclass(table_params(table, oneclass={"normal": ["benign"], "variant": "conv"}), data)
    unlabelled = PreparedData(Split(data.train.x, None), data.val, data.test, data.meta)
    with pytest.raises(DataError, match="oneclass: the data has no labels"):
        oneclass.train_oneclass(table_params(table, oneclass={"normal": ["benign"]}), unlabelled)


def test_oneclass_command_keeps_a_bundle_with_its_threshold(table):
    from aelab import cli

    params = table_params(table)
    prepare(params.data, params.seed, MLP)
    mine = {"data": {**TABLE, "path": "measurements.csv"}, **FAST, "oneclass": {"max_epochs": 5}}
    (table.parent / "mine.yaml").write_text(yaml.safe_dump(mine))
    cli.run(["oneclass", "--params", "mine.yaml", "--normal", "benign", "--set", "oneclass.false_positive_rate=0.1"])
    folder = table.parent / "data/models/oneclass"
    metrics = json.loads((folder / "metrics.json").read_text())
    bundle = read_bundle(folder)
    kept = {"normal": ["benign"], "threshold": metrics["threshold"], "score": "mse", "target_fpr": 0.1}
    assert bundle.oneclass == kept
    assert bundle.preprocessing.feature_names == COLUMNS and bundle.preprocessing.label_names == ["benign", "faulty"]
    assert bundle.preprocessing.label_column == "status" and bundle.module.hidden_dims == [32, 4]
    assert bundle.preprocessing.scaling["kind"] == "per_feature" and not bundle.preprocessing.scaling["clip"]
    assert metrics["normal"] == ["benign"] and 0 <= metrics["auroc"] <= 1


def test_evaluate_on_a_table_names_one_class_results_by_label(table, tmp_path):
    import torch

    from aelab.evaluation import study as stage
    from aelab.stages.reduce import reduce

    params = table_params(
        table,
        reduce={"pca_components": 4},
        evaluate={
            "tsne": {"max_samples": 40},
            "oneclass": {"classes": ["faulty", "benign"], "max_epochs": 1, "hidden_dims": [4]},
        },
    )
    data = prepare(params.data, params.seed, MLP)
    reduce(params, "pca", data, out=tmp_path / "codes")
    with torch.random.fork_rng():
        results, _ = stage.evaluate(
            params, data, codes_dir=tmp_path / "codes", models_dir=tmp_path / "models", out=tmp_path / "evaluation"
        )
    assert {"oneclass/auroc/benign", "oneclass/auroc/faulty"} <= set(results["pca"])
    assert results["pca"]["oneclass/auroc/benign"] > 0.85  # PCA of the benign rows misfits the faulty ones
    table_csv = pd.read_csv(tmp_path / "evaluation/tables/oneclass_per_class.csv")
    assert list(table_csv["class"]) == ["faulty", "faulty", "benign", "benign"]
