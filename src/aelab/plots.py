"""Figures shared by the stages (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def as_images(x: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
    """Rows as 2-D images: the dataset's own shape, a square if the width allows, else one strip per row."""
    if image_shape is not None:
        c, h, w = image_shape
        images = x.reshape(len(x), c, h, w)
        return images[:, 0] if c == 1 else images.transpose(0, 2, 3, 1)
    side = math.isqrt(x.shape[1])
    if side * side == x.shape[1]:
        return x.reshape(len(x), side, side)
    return x.reshape(len(x), 1, -1)


def image_grid(rows: dict[str, np.ndarray], image_shape: tuple[int, ...] | None, title: str = "") -> Figure:
    """One row of samples per entry (for example clean / corrupted / reconstructed)."""
    n_cols = min(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.2 * n_cols, 1.3 * len(rows)), squeeze=False)
    for r, (label, values) in enumerate(rows.items()):
        images = as_images(np.asarray(values[:n_cols]), image_shape)
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0, aspect="auto" if images.shape[1] == 1 else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
