"""2-D maps of the test codes with scikit-learn's t-SNE, coloured by label."""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.manifold import TSNE, trustworthiness

from aelab.config import TsneConfig


def subsample(n: int, max_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset (all of them if n is small enough)."""
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def embed(codes: np.ndarray, cfg: TsneConfig, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """The 2-D points to draw, and how faithfully they keep the codes' neighbourhoods (trustworthiness, 5-NN).

    A 2-D code is drawn as it is: embedding it again would only distort it.
    """
    codes = codes.astype(np.float64)
    if codes.shape[1] == 2:
        return codes, {}
    perplexity = min(cfg.perplexity, (len(codes) - 1) / 3)
    points = TSNE(
        n_components=2, perplexity=perplexity, max_iter=cfg.max_iter, init="pca", random_state=seed
    ).fit_transform(codes)
    return points, {"tsne/trustworthiness": float(trustworthiness(codes, points, n_neighbors=5))}


def scatter_figure(points: np.ndarray, labels: np.ndarray | None, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6)
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
        ax.legend(*scatter.legend_elements(), title="label", loc="best", fontsize="small", markerscale=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
