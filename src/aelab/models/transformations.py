"""Predicting geometric transformations: a self-supervised head on a convolutional encoder's code.

Golan and El-Yaniv (2018) train a classifier to tell which of a set of transformations was applied to an image of
the normal class; on an anomaly the classifier is unsure, so the negative log-probability of the right
transformation, averaged over all of them, is an anomaly score. Here the classifier is a small head on the code of
the conv autoencoder, trained together with the reconstruction (`variants.conv.transformations`), and the
transformations are the eight symmetries of the square: four rotations by 90 degrees, each with and without a
horizontal flip. Torch only: one-class scoring uses it without Lightning.
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
HEAD_WIDTH = 128


def transform_images(x: Tensor, which: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Flat images `x` (n, c*h*w), each transformed by its own index in `which` (n,), flat again."""
    images = x.reshape(len(x), *image_shape)
    out = torch.empty_like(images)
    for k in range(N_TRANSFORMATIONS):
        rows = (which == k).nonzero(as_tuple=True)[0]
        if len(rows):
            picked = images[rows]
            if k >= 4:
                picked = picked.flip(-1)
            out[rows] = torch.rot90(picked, k % 4, dims=(-2, -1))
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
    code_dim = int(hparams["hidden_dims"][-1])
    return nn.Sequential(nn.Linear(code_dim, HEAD_WIDTH), nn.ReLU(), nn.Linear(HEAD_WIDTH, N_TRANSFORMATIONS))


def transformation_loss(encoder: nn.Module, head: nn.Module, x: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Cross-entropy of the head on `x` under transformations drawn at random (training) or spread evenly over
    the batch (evaluation, so that the validation loss does not depend on a draw)."""
    if head.training:
        which = torch.randint(0, N_TRANSFORMATIONS, (len(x),), device=x.device)
    else:
        which = torch.arange(len(x), device=x.device) % N_TRANSFORMATIONS
    return F.cross_entropy(head(encoder(transform_images(x, which, image_shape))), which)


@torch.inference_mode()
def transformation_nll(
    encoder: nn.Module, head: nn.Module, x: Tensor, image_shape: Sequence[int], batch_size: int = 1024
) -> Tensor:
    """Golan and El-Yaniv's score: per image, the head's negative log-probability of the applied transformation,
    averaged over all eight (high on images unlike the normal class)."""
    scores = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        total = torch.zeros(len(chunk), dtype=torch.float64)
        for k in range(N_TRANSFORMATIONS):
            which = torch.full((len(chunk),), k, dtype=torch.long)
            logits = head(encoder(transform_images(chunk, which, image_shape)))
            total -= F.log_softmax(logits, dim=1)[:, k].double()
        scores.append(total / N_TRANSFORMATIONS)
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)
