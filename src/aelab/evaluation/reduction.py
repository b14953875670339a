"""Dimensionality reduction against PCA: reconstruction error, explained variance and code statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from aelab.data.prepared import SPLITS, PreparedData


def reconstruct(reducer: Any, codes: np.ndarray, clip: bool = False) -> np.ndarray:
    """`reducer.inverse_transform(codes)` as float32: the method's own reconstruction, unclipped by default.

    Unclipped is the published protocol: Hinton and Salakhutdinov's 13.87 for PCA-30 on MNIST is the error of
    PCA's plain reconstructions, which leave [0, 1]; clipping them to the pixel range lowers that error (to
    about 12.6), so a clipped figure is not comparable with theirs. `clip=True` is for what is shown as an image.
    The autoencoders' sigmoid outputs lie in [0, 1] either way.
    """
    reconstruction = np.asarray(reducer.inverse_transform(codes), dtype=np.float32)
    return np.clip(reconstruction, 0.0, 1.0) if clip else reconstruction


def reconstruction_errors(clean: np.ndarray, reconstruction: np.ndarray) -> dict[str, float]:
    """`recon_mse` per pixel, and `recon_sse`: the squared error summed over features, averaged over samples.

    `recon_sse` is the figure Hinton and Salakhutdinov (2006) report for MNIST (3.00 autoencoder, 13.87 PCA),
    computed on unclipped reconstructions (`reconstruct`).
    """
    squared = (reconstruction.astype(np.float64) - clean.astype(np.float64)) ** 2
    return {"recon_mse": float(squared.mean()), "recon_sse": float(squared.sum(axis=1).mean())}


def explained_variance(clean: np.ndarray, reconstruction: np.ndarray) -> float:
    """Share of the data's total variance that the reconstruction explains: 1 - SSE / total sum of squares.

    For PCA on the data it was fitted on this equals `explained_variance_ratio_.sum()`.
    """
    from sklearn.metrics import r2_score  # here, not at the top: the reduce stage imports this module

    return float(r2_score(clean.astype(np.float64), reconstruction.astype(np.float64), multioutput="variance_weighted"))


def code_statistics(codes: np.ndarray) -> dict[str, float]:
    """How the code space is used: scale, spread, and the effective number of dimensions.

    `code/effective_dims` is the participation ratio (sum of variances)^2 / sum of squared variances of the
    codes' principal components: k for k equally used directions, 1 when one direction carries everything.
    """
    from sklearn.decomposition import PCA

    codes = codes.astype(np.float64)
    stds = codes.std(axis=0)
    variances = PCA().fit(codes).explained_variance_ if len(codes) > 1 else np.zeros(1)
    total = float(variances.sum())
    effective = total**2 / float((variances**2).sum()) if total > 0 else 0.0
    return {
        "code/mean": float(codes.mean()),
        "code/std": float(stds.mean()),
        "code/constant_fraction": float((stds < 1e-6).mean()),
        "code/effective_dims": float(effective),
    }


def encode_splits(reducer, data: PreparedData) -> dict[str, np.ndarray]:
    """The content of `codes.npz`: each split's codes (and labels) and the test reconstructions (PCA's unclipped)."""
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        part = data.split(split)
        arrays[f"{split}_codes"] = reducer.transform(part.x).astype(np.float32)
        if part.y is not None:
            arrays[f"{split}_labels"] = part.y
    arrays["test_reconstruction"] = reconstruct(reducer, arrays["test_codes"])  # unclipped: the published protocol
    return arrays
