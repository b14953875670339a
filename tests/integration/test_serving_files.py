"""`aelab encode | reconstruct | score | export` on files, the MLflow pyfunc, and the encode speed check."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

import aelab
from aelab.errors import DataError
from aelab.serving.commands import apply_to_file
from tests.helpers import TABLE_COLUMNS, digits_bundle, imported_modules, log_table_model, table_bundle


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.data.astype(np.float32), data.target


@pytest.fixture
def model_dir(tmp_path, digits):
    digits_bundle(tmp_path / "model", digits[0])
    return tmp_path / "model"


def write_input(folder, kind: str, x: np.ndarray, y: np.ndarray):
    """The digits in one of the formats `data.source` reads."""
    columns = [f"p{i}" for i in range(x.shape[1])]
    if kind == "csv":
        pd.DataFrame(x, columns=columns).assign(label=y).to_csv(folder / "in.csv", index=False)
        return folder / "in.csv"
    if kind == "csv-unlabelled":
        pd.DataFrame(x, columns=columns).to_csv(folder / "in.csv", index=False)
        return folder / "in.csv"
    if kind == "parquet":
        pd.DataFrame(x, columns=columns).assign(label=y).to_parquet(folder / "in.parquet", index=False)
        return folder / "in.parquet"
    if kind == "npy":
        np.save(folder / "in.npy", x.reshape(-1, 8, 8))
        return folder / "in.npy"
    if kind == "npz":
        np.savez(folder / "in.npz", x=x, y=y)
        return folder / "in.npz"
    images = x.astype(np.uint8).reshape(-1, 8, 8)  # IDX, as MNIST is published
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *images.shape)
    (folder / "in-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    return folder / "in-idx3-ubyte.gz"


def read_output(path) -> pd.DataFrame:
    if path.suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        return pd.DataFrame(values.reshape(len(values), -1))
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize("kind", ["csv", "csv-unlabelled", "parquet", "npy", "npz", "idx"])
def test_encode_reads_every_input_format_in_chunks(tmp_path, model_dir, digits, kind):
    x, y = digits
    source = write_input(tmp_path, kind, x, y)
    summary = apply_to_file("encode", model_dir, source, tmp_path / "codes.csv", chunk_rows=500)
    out = pd.read_csv(tmp_path / "codes.csv")
    codes = out[[f"code_{i}" for i in range(8)]].to_numpy()
    np.testing.assert_allclose(codes, aelab.load(model_dir).encode(x), rtol=1e-5, atol=1e-6)
    labelled = kind in ("csv", "parquet", "npz")
    assert ("label" in out) == labelled and (not labelled or (out["label"] == y).all())
    assert summary.startswith(f"encoded 1797 rows of {source} with model -> {tmp_path / 'codes.csv'} (8 code columns")


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".csv"])
def test_outputs_by_extension(tmp_path, model_dir, digits, suffix):
    source = write_input(tmp_path, "npz", *digits)
    apply_to_file("reconstruct", model_dir, source, tmp_path / f"out{suffix}", chunk_rows=700)
    out = read_output(tmp_path / f"out{suffix}")
    expected = aelab.load(model_dir).reconstruct(digits[0])
    np.testing.assert_allclose(out.iloc[:, :64].to_numpy(), expected, rtol=1e-5, atol=1e-4)
    assert list(out.columns[-1:]) == ([63] if suffix == ".npy" else ["label"])
    assert not (tmp_path / f"out{suffix}.tmp").exists()


def test_score_of_a_one_class_table_passes_the_label_through(tmp_path):
    frame = table_bundle(tmp_path / "table")
    frame[["kind", *reversed(TABLE_COLUMNS)]].to_csv(tmp_path / "rows.csv", index=False)  # any column order
    summary = apply_to_file("score", tmp_path / "table", tmp_path / "rows.csv", tmp_path / "scores.parquet")
    out = pd.read_parquet(tmp_path / "scores.parquet")
    model = aelab.load(tmp_path / "table")
    assert list(out.columns) == ["score", "is_anomaly", "kind"]
    np.testing.assert_allclose(out["score"], model.score(frame[TABLE_COLUMNS]), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["is_anomaly"], model.predict(frame[TABLE_COLUMNS]))
    assert (out["kind"] == frame["kind"]).all()
    assert f"is_anomaly ({out['is_anomaly'].sum()} above threshold" in summary


def test_invalid_rows_are_refused_with_their_row_number(tmp_path, model_dir, digits):
    rows = pd.DataFrame(digits[0][:20], columns=[f"p{i}" for i in range(64)]).astype(object)
    rows.iat[4, 10] = np.nan
    rows.iat[12, 3] = "abc"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(DataError, match=r"rows\.csv: row 5 \(line 6\): NaN \(missing value\) in column 'p10'"):
        apply_to_file("encode", model_dir, tmp_path / "rows.csv", tmp_path / "out.csv", chunk_rows=8)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.tmp").exists()
    rows.iat[4, 10] = 1.0
    rows.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(DataError, match=r"row 13 \(line 14\): non-numeric value 'abc' in column 'p3'"):
        apply_to_file("encode", model_dir, tmp_path / "rows.csv", tmp_path / "out.csv", chunk_rows=8)
    x = digits[0][:20].copy()
    x[7, 0] = np.inf
    np.save(tmp_path / "rows.npy", x)
    with pytest.raises(DataError, match=r"rows\.npy: row 8: value inf in column 0"):
        apply_to_file("score", model_dir, tmp_path / "rows.npy", tmp_path / "out.npy")


def test_a_malformed_csv_line_is_a_data_error(tmp_path, model_dir, digits):
    write_input(tmp_path, "csv", *digits)
    with (tmp_path / "in.csv").open("a") as handle:
        handle.write(",".join(["1"] * 80) + "\n")  # more fields than the header
    with pytest.raises(DataError, match=r"in\.csv: cannot read past row 1500 \(Error tokenizing data"):
        apply_to_file("encode", model_dir, tmp_path / "in.csv", tmp_path / "codes.csv", chunk_rows=500)
    assert not (tmp_path / "codes.csv").exists()


def test_skip_invalid_leaves_rows_out_and_lists_them(tmp_path, model_dir, digits, capsys):
    x = digits[0][:30].copy()
    x[[2, 17], 5] = np.nan
    np.save(tmp_path / "rows.npy", x)
    apply_to_file("encode", model_dir, tmp_path / "rows.npy", tmp_path / "codes.npy", skip_invalid=True, chunk_rows=8)
    codes = np.load(tmp_path / "codes.npy")
    keep = np.ones(30, dtype=bool)
    keep[[2, 17]] = False
    np.testing.assert_allclose(codes, aelab.load(model_dir).encode(x[keep]), atol=1e-6)
    err = capsys.readouterr().err
    assert "skipped 2 invalid row(s)" in err and "rows 3, 18" in err


def test_progress_bar_on_a_terminal_changes_nothing(tmp_path, model_dir, digits, monkeypatch):
    source = write_input(tmp_path, "csv", *digits)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    apply_to_file("encode", model_dir, source, tmp_path / "codes.npy", chunk_rows=300)
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), aelab.load(model_dir).encode(digits[0]), atol=1e-6)


def test_skipped_rows_are_reported_on_stderr(tmp_path, model_dir, digits):
    x = digits[0][:30].copy()
    x[[2, 17], 5] = np.nan
    np.save(tmp_path / "rows.npy", x)
    result = _aelab("score", "model", "rows.npy", "--out", "s.csv", "--skip-invalid", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped 2 invalid row(s)" in result.stderr and "rows 3, 18" in result.stderr
    assert result.stdout.strip().count("\n") == 0 and result.stdout.startswith("scored 28 rows of")
    assert len(pd.read_csv(tmp_path / "s.csv")) == 28


def _aelab(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "aelab.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_errors_are_one_line(tmp_path):
    table_bundle(tmp_path / "table", oneclass=False)
    pd.DataFrame({"alpha": [1.0], "beta": [2.0]}).to_csv(tmp_path / "rows.csv", index=False)
    result = _aelab("encode", str(tmp_path / "table"), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "missing column(s) 'gamma', 'delta', 'eps'" in result.stderr
    result = _aelab("encode", str(tmp_path / "table"), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and "unsupported output '.json'; allowed: .csv, .parquet, .npy" in result.stderr
    result = _aelab("score", str(tmp_path / "nothing"), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and "no model bundle here" in result.stderr


@pytest.mark.parametrize("variant", ["undercomplete", "conv"])
def test_onnx_export_matches_encode(tmp_path, digits, variant):
    import onnxruntime

    from aelab.serving.export import export_model

    digits_bundle(tmp_path / variant, digits[0], variant)
    summary = export_model(tmp_path / variant, "onnx", tmp_path / "encoder.onnx")
    assert summary.endswith(f"output 'code': [batch, {aelab.load(tmp_path / variant).code_dim}])")
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    expected = aelab.load(tmp_path / variant).encode(digits[0])
    for rows in (slice(0, 1), slice(0, 257)):  # a dynamic batch size; raw rows in, the scaling is in the graph
        (codes,) = session.run(None, {"x": digits[0][rows]})
        np.testing.assert_allclose(codes, expected[rows], atol=1e-5)


def test_torchscript_export_matches_encode(tmp_path, model_dir, digits):
    import torch

    from aelab.serving.export import export_model

    export_model(model_dir, "torchscript", tmp_path / "encoder.pt")
    traced = torch.jit.load(str(tmp_path / "encoder.pt"))
    with torch.no_grad():
        codes = traced(torch.from_numpy(digits[0][:33])).numpy()
    np.testing.assert_allclose(codes, aelab.load(model_dir).encode(digits[0][:33]), atol=1e-5)


def test_mlflow_pyfunc_serves_the_codes_of_aelab_encode(tmp_path):
    import mlflow

    frame, info = log_table_model(tmp_path)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    apply_to_file("encode", tmp_path / "table", tmp_path / "rows.csv", tmp_path / "codes.csv")
    cli_codes = pd.read_csv(tmp_path / "codes.csv")[["code_0", "code_1"]].to_numpy()
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == TABLE_COLUMNS
    np.testing.assert_allclose(loaded.predict(frame[TABLE_COLUMNS]), cli_codes, rtol=1e-5, atol=1e-6)
    model = aelab.load(tmp_path / "table")
    scores = loaded.predict(frame[TABLE_COLUMNS], params={"output": "score"})
    np.testing.assert_allclose(scores, model.score(frame[TABLE_COLUMNS]), rtol=1e-6)
    np.testing.assert_array_equal(
        loaded.predict(frame[TABLE_COLUMNS], params={"output": "is_anomaly"}), model.predict(frame[TABLE_COLUMNS])
    )
    assert mlflow.MlflowClient().get_registered_model("aelab-undercomplete").name == "aelab-undercomplete"
    assert not list((tmp_path / "mlruns").rglob("*.pkl"))  # a model from code: nothing of ours pickled
    pinned = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    names = {line.split("==")[0] for line in Path(pinned).read_text().split()}
    assert "lightning" not in names and {"torch", "numpy", "scikit-learn"} <= names


def test_the_pinned_serving_packages_are_the_ones_serving_imports():
    from aelab.serving.pyfunc import RUNTIME_PACKAGES

    assert set(RUNTIME_PACKAGES.values()) <= imported_modules("aelab.serving.pyfunc", "aelab.serving.model")


def test_bench_encode_smoke(capsys):
    from aelab.serving.speed import bench_encode

    result = bench_encode(rows=300, csv_rows=40, repeats=1, features=32)
    assert result["ratio"] > 0 and result["csv_rows"] == 40
    assert "ratio" in capsys.readouterr().out
