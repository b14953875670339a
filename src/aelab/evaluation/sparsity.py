"""Sparsity diagnostics of sigmoid code units, and the learned first-layer features drawn as images."""

from __future__ import annotations

import math

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from torch import nn

from aelab.config import SparsityEvalConfig
from aelab.plots import as_images, mosaic


def unit_statistics(codes: np.ndarray, rho: float, cfg: SparsityEvalConfig) -> tuple[dict[str, float], np.ndarray]:
    """Per-unit mean activation `rho_hat` (returned) against the target `rho`, and summary metrics.

    A unit is active on a sample when its activation exceeds `active_threshold`; it is dead when it is active
    on no test sample and always-on when it is active on all of them (both carry no information).
    """
    rho_hat = codes.astype(np.float64).mean(axis=0)
    active_rate = (codes > cfg.active_threshold).mean(axis=0)
    metrics = {
        "sparsity/rho": float(rho),
        "sparsity/mean_activation": float(rho_hat.mean()),
        "sparsity/mean_abs_deviation": float(np.abs(rho_hat - rho).mean()),
        "sparsity/dead_fraction": float((active_rate == 0.0).mean()),
        "sparsity/always_on_fraction": float((active_rate == 1.0).mean()),
        "sparsity/active_per_sample": float((codes > cfg.active_threshold).sum(axis=1).mean()),
    }
    return metrics, rho_hat


def histogram_figure(rho_hat: np.ndarray, rho: float, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.hist(rho_hat, bins=40, range=(0.0, max(1e-3, float(rho_hat.max()))), color="tab:blue")
    ax.axvline(rho, color="tab:red", ls="--", label=f"target rho = {rho:g}")
    ax.set_xlabel("mean activation of a code unit on the test data")
    ax.set_ylabel("units")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def first_layer_weights(
    module: nn.Module, image_shape: tuple[int, ...] | None
) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """[units, inputs] of the encoder's first layer and the shape each unit's weights are drawn in: a dense unit's
    weights span the input (the dataset's `image_shape`), a convolution's are its `[in channels, kh, kw]` kernel."""
    first = next(m for m in module.encoder.modules() if hasattr(m, "weight") and m.weight.ndim in (2, 4))
    weights = first.weight.detach().cpu().numpy()
    if weights.ndim == 4:
        return weights.reshape(len(weights), -1), tuple(weights.shape[1:])
    return weights, image_shape


def features_figure(weights: np.ndarray, image_shape: tuple[int, ...] | None, max_features: int, title: str) -> Figure:
    """The first `max_features` units' weights as images, each scaled to its own [min, max]."""
    weights = weights[:max_features]
    low = weights.min(axis=1, keepdims=True)
    span = np.maximum(weights.max(axis=1, keepdims=True) - low, 1e-12)
    images = as_images((weights - low) / span, image_shape)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    fig, ax = plt.subplots(figsize=(0.9 * cols, 0.9 * rows + 0.4))
    ax.imshow(mosaic(images, cols), cmap="gray", vmin=0.0, vmax=1.0, aspect="auto" if images.shape[1] == 1 else "equal")
    ax.set_axis_off()
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return fig
