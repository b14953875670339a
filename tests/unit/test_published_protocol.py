"""The published protocol for the Hinton comparison: PCA's reconstruction error without clipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aelab.config import load_params
from aelab.data.prepared import PreparedData, Split
from aelab.evaluation import reduction

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_pca_error_is_unclipped_and_equals_numpy_svd() -> None:
    from aelab.evaluation.reduction import encode_splits
    from aelab.evaluation.study import evaluate_reduction
    from aelab.stages.reduce import fit_reducer

    rng = np.random.default_rng(4)
    low_rank = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 30))
    x = (low_rank + 0.5 * rng.normal(size=low_rank.shape) > 0).astype(np.float32)  # binary pixels, like MNIST's
    data = PreparedData(Split(x, None), Split(x, None), Split(x, None), meta={"name": "binary"})
    k = 3
    params = load_params(REPO / "params.yaml", [f"reduce.pca_components={k}"])
    arrays = encode_splits(fit_reducer(params, "pca", data), data)
    recon = arrays["test_reconstruction"]
    assert recon.min() < 0.0 and recon.max() > 1.0  # PCA leaves the pixel range: clipping would change the error

    singular = np.linalg.svd(x.astype(np.float64) - x.mean(axis=0, dtype=np.float64), compute_uv=False)
    expected = (singular[k:] ** 2).sum() / len(x)  # the least squared error of any rank-k affine reconstruction
    metrics = evaluate_reduction(data, arrays)
    assert metrics["recon_sse"] == pytest.approx(expected, rel=1e-5)
    clipped = reduction.reconstruction_errors(x, np.clip(recon, 0.0, 1.0))["recon_sse"]
    assert clipped < metrics["recon_sse"] * 0.99  # the clipped figure (what 12.59 vs 13.87 was) is lower


def test_reconstruct_clips_only_when_asked() -> None:
    class Doubling:
        def inverse_transform(self, codes: np.ndarray) -> np.ndarray:
            return 2.0 * codes

    codes = np.array([[-0.5, 0.25, 0.75]])
    assert reduction.reconstruct(Doubling(), codes).tolist() == [[-1.0, 0.5, 1.5]]
    assert reduction.reconstruct(Doubling(), codes, clip=True).tolist() == [[0.0, 0.5, 1.0]]
    assert reduction.reconstruct(Doubling(), codes).dtype == np.float32
