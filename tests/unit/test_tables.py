"""Tables without training: partial params, the variants list, per-column scaling and label values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aelab.config import VARIANTS, Params, load_params, validate_params
from aelab.data.labels import encode_labels, label_codes
from aelab.data.prepared import PreparedData, Split
from aelab.data.scaling import Scaler
from aelab.errors import ConfigError, DataError
from aelab.evaluation.study import by_label_value, find_methods
from aelab.stages.prepare import prepare
from tests.conftest import REPO
from tests.table_data import TABLE


# ---- params ----------------------------------------------------------------------------------------------------
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
