"""The fitted PCA travels as arrays: exact round trip, and a pickled file next to it is never loaded."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from aelab.errors import DataError
from aelab.evaluation.pca_io import load_pca, save_pca
from aelab.paths import PCA_FILE


class _Payload:
    """Unpickling this creates a file: what a crafted `pca.joblib` from a shared DVC cache could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("whiten", [False, True])
def test_npz_round_trip_reproduces_transform_exactly(tmp_path, whiten):
    rng = np.random.default_rng(0)
    x = rng.random((80, 12)).astype(np.float32)
    pca = PCA(n_components=4, whiten=whiten, random_state=3).fit(x)
    save_pca(pca, tmp_path / PCA_FILE)
    loaded = load_pca(tmp_path / PCA_FILE)
    codes = pca.transform(x)
    np.testing.assert_array_equal(loaded.transform(x), codes)
    np.testing.assert_array_equal(loaded.inverse_transform(codes), pca.inverse_transform(codes))
    assert loaded.explained_variance_ratio_.sum() == pca.explained_variance_ratio_.sum()
    with np.load(tmp_path / PCA_FILE, allow_pickle=False) as archive:  # nothing in it needs pickle
        assert all(archive[k].dtype != object for k in archive.files)


def test_crafted_pca_joblib_is_never_loaded(tmp_path):
    from aelab.evaluation.study import pca_denoiser

    marker = tmp_path / "pwned"
    (tmp_path / "pca").mkdir()
    (tmp_path / "pca" / "pca.joblib").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match=r"pca\.npz: not found .*aelab reduce --method pca"):
        pca_denoiser(tmp_path)
    assert not marker.exists()


def test_pca_npz_that_is_not_a_pca_is_a_clear_error(tmp_path):
    np.savez(tmp_path / PCA_FILE, x=np.zeros(3))
    with pytest.raises(DataError, match=r"not a saved PCA \(missing settings"):
        load_pca(tmp_path / PCA_FILE)


def test_reduce_pca_writes_arrays_and_evaluate_uses_them(prepared_digits, tiny_params):
    from aelab.evaluation.study import pca_denoiser
    from aelab.stages.reduce import reduce

    folder = reduce(tiny_params, "pca", prepared_digits)
    assert (folder / PCA_FILE).exists() and not list(folder.glob("*.joblib"))
    pca = pca_denoiser(folder.parent)
    codes = np.load(folder / "codes.npz")["test_codes"]
    np.testing.assert_allclose(pca.transform(prepared_digits.test.x), codes, rtol=1e-5, atol=1e-6)
