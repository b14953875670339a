"""The model bundle and the Python API: raw rows in, the same codes and scores as the pipeline's own path."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.covariance import LedoitWolf
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

import aelab
from aelab.data.scaling import Scaler
from aelab.errors import CheckpointError, DataError
from aelab.evaluation.oneclass import error_weights, per_sample_error
from aelab.reducers import AutoencoderReducer
from aelab.serving.bundle import read_bundle, write_bundle
from aelab.serving.inference import InputScaling
from tests.helpers import TABLE_COLUMNS, digits_bundle, table_bundle


@pytest.fixture(scope="module")
def digits_x() -> np.ndarray:
    return load_digits().data.astype(np.float32)


@pytest.fixture
def digits_model(tmp_path, digits_x):
    module, scaler = digits_bundle(tmp_path / "undercomplete", digits_x)
    return tmp_path / "undercomplete", module, scaler


# ---- the bundle ----------------------------------------------------------------------------------------------------
def test_bundle_round_trip(digits_model):
    folder, module, _ = digits_model
    bundle = read_bundle(folder)
    assert bundle.info["format_version"] == 1 and bundle.info["variant"] == "undercomplete"
    assert bundle.info["files"] == ["model.pt", "preprocessing.json"] and bundle.oneclass is None
    assert bundle.preprocessing.image_shape == [1, 8, 8] and bundle.preprocessing.feature_names is None
    for key, value in module.state_dict().items():
        assert torch.equal(bundle.module.state_dict()[key], value)


def test_bundle_with_a_missing_file_names_it(digits_model):
    folder = digits_model[0]
    (folder / "preprocessing.json").unlink()
    with pytest.raises(CheckpointError, match=r"preprocessing\.json: missing from the model bundle"):
        aelab.load(folder)


def test_bundle_of_another_format_version_is_refused(digits_model):
    folder = digits_model[0]
    info = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(CheckpointError, match=r"bundle\.json: format_version 99; this aelab reads version 1"):
        aelab.load(folder)


def test_folder_without_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        aelab.load(tmp_path / "nothing")
    (tmp_path / "old").mkdir()
    with pytest.raises(CheckpointError, match=r"old/bundle\.json: not found"):
        aelab.load(tmp_path / "old")


def test_meta_without_scaling_takes_rows_as_they_are(tmp_path, digits_x):
    module, _ = digits_bundle(tmp_path / "m", digits_x)
    write_bundle(tmp_path / "m", module, {"name": "in code"})
    rows = digits_x[:5] / 16
    with torch.no_grad():
        expected = module.encode(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(aelab.load(tmp_path / "m").encode(rows), expected, atol=1e-6)
    with pytest.raises(CheckpointError, match="the data has 10 features but the model takes 64"):
        write_bundle(tmp_path / "m", module, {"n_features": 10})


def test_bad_oneclass_record_is_refused(tmp_path, digits_x):
    module, _ = digits_bundle(tmp_path / "m", digits_x)
    with pytest.raises(CheckpointError, match="threshold must be a finite number"):
        write_bundle(tmp_path / "m", module, {"n_features": 64, "scaling": None}, {"threshold": float("nan")})


# ---- the Python API ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["global", "per_feature"])
def test_input_scaling_matches_the_fitted_scaler(kind, digits_x):
    scaler = Scaler(kind).fit(digits_x[:500])
    rows = np.concatenate([digits_x[500:], digits_x[:50] * 3 - 20])  # values outside the training range too
    ours = InputScaling(scaler, 64)(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(ours, scaler.transform(rows), atol=1e-6)


def test_api_matches_the_module_on_scaled_rows(digits_model, digits_x):
    folder, module, scaler = digits_model
    model = aelab.load(folder)
    scaled = scaler.transform(digits_x)
    with torch.no_grad():
        codes = module.encode(torch.from_numpy(scaled)).numpy()
        recon = module(torch.from_numpy(scaled)).numpy()
    np.testing.assert_allclose(model.encode(digits_x), codes, atol=1e-5)
    np.testing.assert_allclose(model.transform(digits_x.reshape(-1, 8, 8)), codes, atol=1e-5)  # images as arrays
    np.testing.assert_allclose(model.score(digits_x), per_sample_error(scaled, recon), rtol=1e-4, atol=1e-7)
    raw_recon = recon * scaler.scale_ + scaler.min_
    np.testing.assert_allclose(model.reconstruct(digits_x), raw_recon, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.inverse_transform(codes), raw_recon, rtol=1e-5, atol=1e-4)
    assert model.code_dim == 8 and model.threshold is None


def test_api_matches_the_pipelines_reducer(digits_model, digits_x):
    folder, _, scaler = digits_model
    reducer = AutoencoderReducer.load(folder / "model.pt")
    expected = reducer.transform(scaler.transform(digits_x))
    np.testing.assert_allclose(aelab.load(folder).encode(digits_x), expected, atol=1e-5)
    assert clone(aelab.load(folder)).fit().module_.code_dim == 8  # the public model is a scikit-learn estimator


def test_dataframe_columns_are_matched_by_name(tmp_path):
    frame = table_bundle(tmp_path / "table", oneclass=False)
    model = aelab.load(tmp_path / "table")
    shuffled = frame[list(reversed(TABLE_COLUMNS))]
    np.testing.assert_allclose(model.encode(shuffled), model.encode(frame[TABLE_COLUMNS]), atol=1e-6)
    np.testing.assert_allclose(model.encode(frame[TABLE_COLUMNS].to_numpy()), model.encode(shuffled), atol=1e-6)
    with pytest.raises(DataError, match=r"missing column\(s\) 'gamma'"):
        model.encode(frame[["alpha", "beta", "delta", "eps"]])
    with pytest.raises(DataError, match=r"extra column\(s\) 'kind'"):
        model.encode(frame)


def test_invalid_rows_are_named(tmp_path, digits_model, digits_x):
    model = aelab.load(digits_model[0])
    rows = digits_x[:6].copy()
    rows[3, 5] = np.nan
    with pytest.raises(DataError, match=r"X\[3\]: NaN \(missing value\) in column 5"):
        model.encode(rows)
    frame = table_bundle(tmp_path / "table", oneclass=False)[TABLE_COLUMNS].astype(object)
    frame.iat[4, 2] = "n/a"
    with pytest.raises(DataError, match=r"row 4 \(index 4\): non-numeric value 'n/a' in column 'gamma'"):
        aelab.load(tmp_path / "table").score(frame)
    with pytest.raises(DataError, match=r"rows have 63 features, the model takes 64"):
        model.encode(digits_x[:, :63])


def test_predict_uses_the_stored_threshold(tmp_path, digits_model, digits_x):
    frame = table_bundle(tmp_path / "table")
    model = aelab.load(tmp_path / "table")
    scores = model.decision_function(frame[TABLE_COLUMNS])
    assert model.oneclass_["normal"] == ["benign"]
    np.testing.assert_array_equal(model.predict(frame[TABLE_COLUMNS]), (scores > model.threshold).astype(int))
    assert 0 < model.predict(frame[TABLE_COLUMNS]).mean() < 1
    with pytest.raises(CheckpointError, match="not a one-class model"):
        aelab.load(digits_model[0]).predict(digits_x[:3])


def test_standardized_score_weights_each_feature(tmp_path, digits_x):
    module, scaler = digits_bundle(tmp_path / "m", digits_x)
    scaled = scaler.transform(digits_x)
    with torch.no_grad():
        recon = module(torch.from_numpy(scaled)).numpy()
    weights = error_weights(scaled[:500], recon[:500])
    meta = {"n_features": 64, "scaling": scaler.to_dict()}
    write_bundle(tmp_path / "m", module, meta, {"threshold": 0.5, "score": "standardized", "weights": weights.tolist()})
    expected = per_sample_error(scaled, recon, weights)
    np.testing.assert_allclose(aelab.load(tmp_path / "m").score(digits_x), expected, rtol=1e-4)


def test_combined_score_adds_the_code_distance(tmp_path, digits_x):
    module, scaler = digits_bundle(tmp_path / "m", digits_x)
    scaled = scaler.transform(digits_x)
    with torch.no_grad():
        recon, codes = module(torch.from_numpy(scaled)).numpy(), module.encode(torch.from_numpy(scaled)).numpy()
    density = LedoitWolf().fit(codes[:1000].astype(np.float64))
    error, distance = per_sample_error(scaled, recon), density.mahalanobis(codes.astype(np.float64))
    medians = [float(np.median(error[1000:])), float(np.median(distance[1000:]))]
    record = {
        "threshold": 2.0,
        "score": "combined",
        "code_location": density.location_.tolist(),
        "code_precision": density.precision_.tolist(),
        "medians": medians,
    }
    write_bundle(tmp_path / "m", module, {"n_features": 64, "scaling": scaler.to_dict()}, record)
    model = aelab.load(tmp_path / "m")
    expected = error / medians[0] + distance / medians[1]
    np.testing.assert_allclose(model.score(digits_x), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(model.predict(digits_x[:50]), (model.score(digits_x[:50]) > 2.0).astype(int))
    # a record that cannot be scored is refused when the bundle is written, naming the key
    with pytest.raises(CheckpointError, match=r"oneclass.json: the combined score needs `code_precision`, finite"):
        write_bundle(tmp_path / "bad", module, {"n_features": 64}, {**record, "code_precision": [[1.0]]})
    with pytest.raises(CheckpointError, match=r"oneclass.json: the combined score's `medians` must be positive$"):
        write_bundle(tmp_path / "bad", module, {"n_features": 64}, {**record, "medians": [0.0, 1.0]})


def test_works_inside_a_scikit_learn_pipeline(digits_model, digits_x):
    y = load_digits().target
    pipeline = Pipeline([("autoencoder", aelab.load(digits_model[0])), ("probe", LogisticRegression(max_iter=200))])
    pipeline.fit(digits_x[:1000], y[:1000])
    assert pipeline.predict(digits_x[1000:]).shape == (797,)
    fresh = clone(pipeline).fit(digits_x[:1000], y[:1000])  # a clone reloads the bundle instead of training
    np.testing.assert_array_equal(fresh.predict(digits_x[1000:]), pipeline.predict(digits_x[1000:]))
    assert list(pipeline[0].get_feature_names_out())[:2] == ["code_0", "code_1"]


def test_one_row_is_scored_well_under_a_millisecond(digits_model, digits_x):
    model = aelab.load(digits_model[0])
    row = digits_x[:1]
    model.score(row)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        model.score(row)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 1e-3, f"median {np.median(times) * 1e6:.0f} us per row"
