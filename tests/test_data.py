import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from aelab.config import validate_params
from aelab.data.prepared import load_prepared
from aelab.data.sources import IDX_DATASETS, IdxDataset, fetch_idx, load_arrays, md5sum, read_idx
from aelab.errors import DataError
from aelab.stages.prepare import prepare
from tests.conftest import TINY_PARAMS


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_idx_folder(folder, n_train=60, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 6, 5)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 3)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 6, 5)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 3)


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_truncated_idx_is_a_clear_error(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((10, 4, 4)))
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(DataError, match=r"b.gz: truncated or corrupt IDX file"):
        read_idx(tmp_path / "b.gz")
    (tmp_path / "c.gz").write_bytes((tmp_path / "a.gz").read_bytes()[:20])
    with pytest.raises(DataError, match="c.gz: cannot read IDX file"):
        read_idx(tmp_path / "c.gz")


def test_missing_files_name_what_to_put_where(tmp_path):
    with pytest.raises(DataError, match=r"mnist: missing train-images-idx3-ubyte.gz.*data.download=true"):
        fetch_idx("mnist", tmp_path / "nothing", download=False)


def test_download_checks_md5_and_keeps_good_files(tmp_path, monkeypatch):
    """The real download path, from a local mirror (file:// URLs), with one file's MD5 wrong."""
    mirror = tmp_path / "mirror"
    _fake_idx_folder(mirror)
    files = {f.name: md5sum(f) for f in mirror.iterdir()}
    monkeypatch.setitem(IDX_DATASETS, "mnist", IdxDataset(files=files, mirrors=(mirror.as_uri() + "/",)))
    target = tmp_path / "raw"
    paths = fetch_idx("mnist", target, download=True)
    assert all(md5sum(p) == files[p.name] for p in paths.values())

    bad = dict(files, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
    monkeypatch.setitem(IDX_DATASETS, "mnist", IdxDataset(files=bad, mirrors=(mirror.as_uri() + "/",)))
    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="could not download t10k-labels-idx1-ubyte.gz: .*MD5 mismatch"):
        fetch_idx("mnist", target, download=True)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert sorted(p.name for p in target.iterdir()) == sorted(f for f in files if f != "t10k-labels-idx1-ubyte.gz")


def test_idx_source_keeps_official_test_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_idx_folder(tmp_path / "idx")
    params = validate_params({**TINY_PARAMS, "data": {"source": "mnist", "path": str(tmp_path / "idx")}})
    data = prepare(params.data, params.seed)
    assert data.meta["sizes"]["test"] == 20
    assert data.meta["sizes"]["train"] + data.meta["sizes"]["val"] == 60
    assert data.image_shape == (1, 6, 5)


def test_shared_mnist_matches_published_md5(shared_data):
    for name, spec in IDX_DATASETS.items():
        for file, md5 in spec.files.items():
            assert md5sum(shared_data / name / file) == md5


def test_prepare_digits_splits_stratified_and_scales_on_train(prepared_digits, tiny_params):
    data = load_prepared(Path("data/prepared"))
    sizes = {k: len(data.split(k).x) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=1)
    assert sizes["val"] == pytest.approx(0.15 * 1797, abs=2)
    for name in ("train", "val", "test"):
        split = data.split(name)
        assert split.x.dtype == np.float32 and split.x.min() >= 0 and split.x.max() <= 1
        counts = np.bincount(split.y, minlength=10) / len(split.y)
        assert counts.min() > 0.08 and counts.max() < 0.12  # stratified: digits classes are ~10% each
    assert data.train.x.max() == 1.0
    assert data.meta["scaling"] == {"kind": "global", "min": [0.0], "scale": [16.0], "clip": True}
    assert data.meta["label_names"] == list(range(10))


def test_prepare_is_deterministic(prepared_digits, tiny_params):
    first = {k: shutil.copyfile(f"data/prepared/{k}.npz", f"{k}.first") for k in ("train", "val", "test")}
    prepare(tiny_params.data, tiny_params.seed)
    for k in first:
        assert Path(f"data/prepared/{k}.npz").read_bytes() == Path(f"{k}.first").read_bytes()


def test_user_arrays_npz_npy_csv(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 12)).astype(np.float32), np.arange(40) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x.reshape(40, 3, 4))
    np.save(tmp_path / "y.npy", y)
    import pandas as pd

    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)]).assign(kind=np.where(y == 1, "a", "b"))
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = {"source": "arrays"}
    npz = load_arrays(validate_params({**TINY_PARAMS, "data": {**base, "path": str(tmp_path / "d.npz")}}).data)
    npy = load_arrays(
        validate_params(
            {**TINY_PARAMS, "data": {**base, "path": str(tmp_path / "x.npy"), "labels_path": str(tmp_path / "y.npy")}}
        ).data
    )
    csv = load_arrays(
        validate_params({**TINY_PARAMS, "data": {**base, "path": str(tmp_path / "d.csv"), "label_column": "kind"}}).data
    )
    assert np.allclose(npz.x, x) and np.array_equal(npz.y, y)
    assert npy.image_shape == (1, 3, 4) and npy.x.shape == (40, 12)
    assert csv.x.shape == (40, 12) and set(csv.y) == {0, 1}


@pytest.mark.parametrize(
    ("arrays", "extra", "message"),
    [
        ({"x": np.zeros(40)}, {}, r"expected an array of shape \[samples, features...\]"),
        ({"x": np.zeros((40, 5)), "y": np.zeros(39)}, {}, "labels must be a 1-D array of 40 entries"),
        ({"z": np.zeros((40, 5))}, {}, "expected an array named 'x'"),
        ({"x": np.full((40, 5), np.nan)}, {}, "NaN or infinite"),
        ({"x": np.zeros((40, 6))}, {"image_shape": [1, 2, 2]}, r"data.image_shape: \[1, 2, 2\] does not match 6"),
    ],
)
def test_wrong_user_arrays_are_clear_errors(tmp_path, arrays, extra, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    cfg = validate_params({**TINY_PARAMS, "data": {"source": "arrays", "path": str(tmp_path / "bad.npz"), **extra}})
    with pytest.raises(DataError, match=message):
        load_arrays(cfg.data)


def test_missing_user_file_and_bad_suffix(tmp_path):
    cfg = validate_params({**TINY_PARAMS, "data": {"source": "arrays", "path": str(tmp_path / "nope.npy")}})
    with pytest.raises(DataError, match="data.path: file .*nope.npy not found"):
        load_arrays(cfg.data)
    (tmp_path / "d.txt").write_text("1,2")
    cfg = validate_params({**TINY_PARAMS, "data": {"source": "arrays", "path": str(tmp_path / "d.txt")}})
    with pytest.raises(DataError, match="allowed: .npy, .npz, .csv"):
        load_arrays(cfg.data)
