"""A table through the pipeline: partial params, the variants list, per-column scaling, label values, and the
one-class model kept with its threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from aelab.config import VARIANTS, Params, load_params, validate_params
from aelab.data.labels import encode_labels, label_codes
from aelab.data.prepared import PreparedData, Split
from aelab.data.scaling import Scaler
from aelab.errors import ConfigError, DataError
from aelab.stages import oneclass
from aelab.stages.evaluate import by_label_value, find_methods
from aelab.stages.prepare import prepare
from tests.conftest import REPO
from tests.table_data import COLUMNS, write_measurements

TABLE = {"source": "arrays", "label_column": "status"}
MLP = ["undercomplete", "sparse", "denoising", "stacked"]


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A scratch project with the table CSV; prepared data goes to its data/prepared."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    return write_measurements(tmp_path / "measurements.csv")


def table_params(path, **sections) -> Params:
    return validate_params({"data": {**TABLE, "path": str(path)}, "pipeline": {"variants": MLP}, **sections})


# ---- params --------------------------------------------------------------------------------------------------
def test_defaults_are_the_shipped_params_yaml():
    """A partial file means params.yaml with those keys changed (only oneclass.normal has no default)."""
    shipped = load_params(REPO / "params.yaml").model_dump(mode="json")
    defaults = Params().model_dump(mode="json")
    assert shipped["oneclass"].pop("normal") == [0] and defaults["oneclass"].pop("normal") is None
    assert defaults == shipped


def test_a_partial_params_file_is_merged_over_the_defaults(tmp_path):
    (tmp_path / "mine.yaml").write_text("variants:\n  sparse: {rho: 0.1}\n  denoising: {hidden_dims: [16, 4]}\n")
    params = load_params(tmp_path / "mine.yaml", ["train.lr=1.0e-3"])
    assert params.variants.sparse.rho == pytest.approx(0.1) and params.variants.sparse.hidden_dims == [256]
    assert params.variants.denoising.hidden_dims == [16, 4]
    assert params.variants.denoising.corruption[0].kind == "gaussian"  # the default's, kept
    assert params.train.lr == pytest.approx(1e-3) and params.pipeline.variants == list(VARIANTS)
    (tmp_path / "bad.yaml").write_text("variants:\n  sparse: {rhoo: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: variants.sparse.rhoo: unknown key; allowed: .*rho"):
        load_params(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ("[undercomplete, undercomplete]", "pipeline.variants: each variant once"),
        ("[undercomplete, huge]", "pipeline.variants.1: Input should be 'undercomplete'"),
        ("[]", "pipeline.variants: List should have at least 1 item"),
    ],
)
def test_bad_variant_lists_are_one_line_errors(variants, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_params(REPO / "params.yaml", [f"pipeline.variants={variants}"])
    assert "\n" not in str(err.value)


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


# ---- scaling ---------------------------------------------------------------------------------------------------
def test_auto_scaling_is_global_and_clipped_for_images_per_column_and_unclipped_for_tables():
    train = np.array([[0.0, 100.0], [2.0, 300.0]])
    new = np.array([[4.0, 200.0]])
    image = Scaler.for_data("auto", is_image=True).fit(train)
    assert image.kind == "global" and image.transform(new) == pytest.approx(np.array([[4 / 300, 200 / 300]]))
    assert Scaler.for_data("auto", is_image=True).fit(train * 0.01).transform(new).max() == 1.0  # clipped
    table = Scaler.for_data("auto", is_image=False).fit(train)
    assert table.kind == "per_feature"
    assert table.transform(new).tolist() == [[2.0, 0.5]]  # twice the training range: kept, not clipped to 1
    again = Scaler.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.to_dict() == table.to_dict() and again.transform(new).tolist() == [[2.0, 0.5]]
    old = {"kind": "global", "min": [0.0], "scale": [1.0]}  # meta.json written before `clip` existed
    assert Scaler.from_dict(old).clip and Scaler.from_dict(old).transform(np.array([[3.0]])).tolist() == [[1.0]]


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


# ---- labels ----------------------------------------------------------------------------------------------------
def test_labels_become_codes_in_sorted_order_and_values_map_back():
    codes, names = encode_labels(np.array(["b", "a", "c", "a"], dtype=object), "x.csv")
    assert codes.tolist() == [1, 0, 2, 0] and names == ["a", "b", "c"]
    codes, names = encode_labels(np.array([3, 7, 3]), "x.csv")
    assert codes.tolist() == [0, 1, 0] and names == [3, 7]
    assert label_codes(["c", 7, "3"], ["a", "c", 3, 7], "k") == [1, 3, 2]
    with pytest.raises(ConfigError, match=r"^oneclass.normal: unknown label 'benign'; allowed: 0, 1$"):
        label_codes(["benign"], [0, 1], "oneclass.normal")
    with pytest.raises(DataError, match=r"x.csv: 1 rows have no label \(first row 1\)"):
        encode_labels(np.array(["a", np.nan], dtype=object), "x.csv")


def test_code_tables_carry_label_values(table):
    from aelab.stages.reduce import reduce

    params = table_params(table, reduce={"pca_components": 3})
    folder = reduce(params, "pca", prepare(params.data, params.seed, MLP))
    frame = pd.read_csv(folder / "test.csv")
    assert list(frame.columns) == ["code_0", "code_1", "code_2", "label"]
    assert set(frame["label"]) == {"benign", "faulty"}


def test_a_text_feature_column_is_named(tmp_path):
    frame = pd.DataFrame({"a": np.arange(20.0), "site": ["x"] * 20, "status": ["n"] * 20})
    frame.to_csv(tmp_path / "t.csv", index=False)
    params = validate_params({"data": {**TABLE, "path": str(tmp_path / "t.csv")}})
    with pytest.raises(DataError, match=r"t.csv: non-numeric feature columns site$"):
        prepare(params.data, 0)


def test_evaluate_oneclass_classes_take_label_values():
    data = PreparedData(*(Split(np.zeros((4, 2), np.float32), np.array([0, 1, 1, 0])),) * 3, meta={})
    data = PreparedData(data.train, data.val, data.test, meta={"label_names": ["benign", "faulty"]})
    params = validate_params({"evaluate": {"oneclass": {"classes": ["faulty"]}}})
    mapped, names = by_label_value(params, data)
    assert mapped.evaluate.oneclass.classes == [1] and names == ["benign", "faulty"]
    with pytest.raises(ConfigError, match="evaluate.oneclass.classes: unknown label 'ok'; allowed: benign, faulty"):
        by_label_value(validate_params({"evaluate": {"oneclass": {"classes": ["ok"]}}}), data)


def test_evaluate_takes_only_the_listed_variants(tmp_path):
    for method in ("undercomplete", "conv", "pca", "tuned"):
        (tmp_path / method).mkdir()
        np.savez(tmp_path / method / "codes.npz", x=np.zeros(1))
    assert find_methods(tmp_path, ["undercomplete", "sparse"]) == ["pca", "tuned", "undercomplete"]
    assert find_methods(tmp_path) == ["conv", "pca", "tuned", "undercomplete"]


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
    from aelab.serving.bundle import read_bundle

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

    from aelab.stages import evaluate as stage
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
