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


def mosaic(images: np.ndarray, n_cols: int, pad: int = 1) -> np.ndarray:
    """Images `[n, h, w]` (or `[n, h, w, 3]`) tiled row by row into one array, `pad` pixels of 1.0 between them.

    One `imshow` of a mosaic draws in milliseconds; one axes per image costs tens of milliseconds each.
    """
    n, h, w = images.shape[:3]
    n_rows = math.ceil(n / n_cols)
    canvas = np.ones((n_rows * (h + pad) - pad, n_cols * (w + pad) - pad, *images.shape[3:]), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, n_cols)
        canvas[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = images[i]
    return canvas


def image_grid(rows: dict[str, np.ndarray], image_shape: tuple[int, ...] | None, title: str = "") -> Figure:
    """One row of samples per entry (for example clean / corrupted / reconstructed), labelled on the left."""
    n_cols = min(len(v) for v in rows.values())
    images = np.concatenate([as_images(np.asarray(values[:n_cols]), image_shape) for values in rows.values()])
    h = images.shape[1]
    fig, ax = plt.subplots(figsize=(1.2 * n_cols + 1.0, 1.3 * len(rows)))
    strips = h == 1  # table rows: one strip each, stretched to a visible height
    ax.imshow(mosaic(images, n_cols), cmap="gray", vmin=0.0, vmax=1.0, aspect="auto" if strips else "equal")
    ax.set_xticks([])
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(len(rows))], list(rows))
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
