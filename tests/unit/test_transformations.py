"""The transformation-prediction head: the eight rotations and flips, the head's construction, its score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models.transformations import (
    N_TRANSFORMATIONS,
    build_transformation_head,
    transform_images,
    transformation_nll,
)


def test_the_eight_transformations_are_the_symmetries_of_the_square():
    image = torch.arange(9.0).reshape(1, 1, 3, 3)  # no symmetry: every transformation gives another image
    flat = image.reshape(1, -1).repeat(N_TRANSFORMATIONS, 1)
    out = transform_images(flat, torch.arange(N_TRANSFORMATIONS), [1, 3, 3]).reshape(-1, 3, 3)
    assert torch.equal(out[0], image[0, 0])  # index 0 is the identity
    assert torch.equal(out[1], torch.rot90(image[0, 0], 1))
    assert torch.equal(out[4], image[0, 0].flip(-1))
    assert torch.equal(out[6], torch.rot90(image[0, 0].flip(-1), 2))
    assert len({tuple(o.flatten().tolist()) for o in out}) == N_TRANSFORMATIONS
    # each row gets its own index, in any order
    which = torch.tensor([5, 0, 5, 3])
    rows = transform_images(flat[:4], which, [1, 3, 3])
    assert torch.equal(rows, out[which].reshape(4, -1))


def test_the_head_needs_square_images_and_is_absent_without_a_weight():
    hparams = {"hidden_dims": [4], "image_shape": [1, 8, 8]}
    assert build_transformation_head(hparams) is None
    head = build_transformation_head({**hparams, "transformation_weight": 1.0})
    assert head(torch.zeros(2, 4)).shape == (2, N_TRANSFORMATIONS)
    with pytest.raises(ConfigError, match=r"rotations need square images, got image_shape \[1, 8, 6\]"):
        build_transformation_head({**hparams, "image_shape": [1, 8, 6], "transformation_weight": 1.0})


def test_the_score_is_the_mean_negative_log_probability_of_the_applied_transformation():
    """An encoder that reads which corner is lit, and a head that maps that to the transformation: on an image lit
    in the top-left corner it is sure of every transformation (score near 0); on a blank image, which looks the
    same under all eight, it is as unsure as it can be (log 8)."""
    corners = [(0, 0), (0, 2), (2, 2), (2, 0)]

    class Corners(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            images = x.reshape(-1, 3, 3)
            return torch.stack([images[:, r, c] for r, c in corners], dim=1)

    lit = torch.zeros(1, 9)
    lit[0, 0] = 1.0
    moved = transform_images(lit.repeat(N_TRANSFORMATIONS, 1), torch.arange(N_TRANSFORMATIONS), [1, 3, 3])
    head = nn.Linear(4, N_TRANSFORMATIONS, bias=False)
    with torch.no_grad():  # transformation k scores the corner the top-left pixel lands in under k
        head.weight.copy_(50.0 * Corners()(moved))
    scores = transformation_nll(Corners(), head, torch.cat([lit, torch.zeros(1, 9)]), [1, 3, 3])
    assert scores[1].item() == pytest.approx(torch.log(torch.tensor(8.0)).item())
    # the corner cannot tell a rotation from a flip that lands on the same corner: two candidates each
    assert scores[0].item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
