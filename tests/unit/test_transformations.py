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
    transformation_count,
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


def test_a_shift_adds_the_eight_symmetries_of_each_of_nine_positions_with_the_border_reflected_in():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    count = transformation_count(shift=1)
    assert count == 72 and transformation_count() == N_TRANSFORMATIONS
    out = transform_images(image.reshape(1, -1).repeat(count, 1), torch.arange(count), [1, 4, 4], shift=1)
    out = out.reshape(-1, 4, 4)
    plain = transform_images(image.reshape(1, -1).repeat(8, 1), torch.arange(8), [1, 4, 4]).reshape(-1, 4, 4)
    assert torch.equal(out[:8], plain)  # no move: the eight symmetries, as without a shift
    # index 8: no symmetry, moved up one row; the bottom row is the reflection of the row above the old bottom
    assert torch.equal(out[8][:3], image[0, 0, 1:]) and torch.equal(out[8][3], image[0, 0, 2])
    # index 8 + 1: the same move, then rotated by 90 degrees
    assert torch.equal(out[9], torch.rot90(out[8], 1))
    # index 8 * 8: down and right; the first row and column reflect the second
    assert torch.equal(out[64][1:, 1:], image[0, 0, :3, :3]) and torch.equal(out[64][0, 1:], image[0, 0, 1, :3])
    assert len({tuple(o.flatten().tolist()) for o in out}) == count


def test_a_shift_widens_the_head_and_must_leave_part_of_the_image():
    hparams = {"hidden_dims": [4], "image_shape": [1, 8, 8], "transformation_weight": 1.0}
    assert build_transformation_head({**hparams, "transformation_shift": 2})(torch.zeros(2, 4)).shape == (2, 72)
    with pytest.raises(ConfigError, match=r"transformations.shift: must be below the image side 8, got 8"):
        build_transformation_head({**hparams, "transformation_shift": 8})
