"""Predicting geometric transformations: a self-supervised head on a convolutional encoder's code.

Golan and El-Yaniv (2018) train a classifier to tell which of a set of transformations was applied to an image of
the normal class; on an anomaly the classifier is unsure, so the negative log-probability of the right
transformation, averaged over all of them, is an anomaly score. Here the classifier is a small head on the code of
the conv autoencoder, trained together with the reconstruction (`variants.conv.transformations`), and the
transformations are the eight symmetries of the square: four rotations by 90 degrees, each with and without a
horizontal flip. With a shift (`transformation_shift`, pixels), each of the eight also comes moved by the shift
up, down, sideways and diagonally (reflecting the border in): 72 transformations, Golan and El-Yaniv's set.
Torch only: one-class scoring uses it without Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aelab.errors import ConfigError

N_TRANSFORMATIONS = 8
"""Rotations by 0, 90, 180 and 270 degrees, then the same four after a horizontal flip."""
TRANSLATIONS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
"""(rows, columns) in units of the shift; the first, no move, keeps indices 0-7 the eight symmetries."""
HEAD_WIDTH = 128


def transformation_count(shift: int = 0) -> int:
    """How many transformations the head tells apart: the eight symmetries, times nine positions with a shift."""
    return N_TRANSFORMATIONS * (len(TRANSLATIONS) if shift else 1)


def _translate(images: Tensor, rows: int, columns: int, shift: int) -> Tensor:
    """Images (n, c, h, w) moved by (rows, columns) * shift pixels, the border reflected into the gap."""
    if rows == columns == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (shift, shift, shift, shift), mode="reflect")
    top, left = shift - rows * shift, shift - columns * shift
    return padded[..., top : top + height, left : left + width]


def transform_images(x: Tensor, which: Tensor, image_shape: Sequence[int], shift: int = 0) -> Tensor:
    """Flat images `x` (n, c*h*w), each transformed by its own index in `which` (n,), flat again. Index k is
    symmetry k % 8 applied after translation k // 8 (`TRANSLATIONS`, times `shift` pixels)."""
    images = x.reshape(len(x), *image_shape)
    out = torch.empty_like(images)
    for k in range(transformation_count(shift)):
        rows = (which == k).nonzero(as_tuple=True)[0]
        if len(rows):
            picked = _translate(images[rows], *TRANSLATIONS[k // N_TRANSFORMATIONS], shift)
            symmetry = k % N_TRANSFORMATIONS
            if symmetry >= 4:
                picked = picked.flip(-1)
            out[rows] = torch.rot90(picked, symmetry % 4, dims=(-2, -1))
    return out.reshape(len(x), -1)


def build_transformation_head(hparams: Mapping[str, Any]) -> nn.Module | None:
    """The head (code -> one logit per transformation) where `transformation_weight` is set, else None."""
    if hparams.get("transformation_weight") is None:
        return None
    shape = hparams.get("image_shape") or []
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(
            f"variants.<conv variant>.transformations: rotations need square images, got image_shape {list(shape)}"
        )
    shift = int(hparams.get("transformation_shift") or 0)
    if shift >= min(shape[1:]):
        raise ConfigError(
            f"variants.<conv variant>.transformations.shift: must be below the image side {shape[1]}, got {shift}"
        )
    code_dim = int(hparams["hidden_dims"][-1])
    return nn.Sequential(nn.Linear(code_dim, HEAD_WIDTH), nn.ReLU(), nn.Linear(HEAD_WIDTH, transformation_count(shift)))


def transformation_loss(
    encoder: nn.Module, head: nn.Module, x: Tensor, image_shape: Sequence[int], shift: int = 0
) -> Tensor:
    """Cross-entropy of the head on `x` under transformations drawn at random (training) or spread evenly over
    the batch (evaluation, so that the validation loss does not depend on a draw)."""
    count = transformation_count(shift)
    if head.training:
        which = torch.randint(0, count, (len(x),), device=x.device)
    else:
        which = torch.arange(len(x), device=x.device) % count
    return F.cross_entropy(head(encoder(transform_images(x, which, image_shape, shift))), which)


@torch.inference_mode()
def transformation_nll(
    encoder: nn.Module,
    head: nn.Module,
    x: Tensor,
    image_shape: Sequence[int],
    batch_size: int = 1024,
    shift: int = 0,
) -> Tensor:
    """Golan and El-Yaniv's score: per image, the head's negative log-probability of the applied transformation,
    averaged over all of them (high on images unlike the normal class)."""
    count = transformation_count(shift)
    scores = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        total = torch.zeros(len(chunk), dtype=torch.float64)
        for k in range(count):
            which = torch.full((len(chunk),), k, dtype=torch.long)
            logits = head(encoder(transform_images(chunk, which, image_shape, shift)))
            total -= F.log_softmax(logits, dim=1)[:, k].double()
        scores.append(total / count)
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)
