"""Corruptions for denoising: small composable transforms applied to whole batches on their device.

Each takes a batch and a `torch.Generator` on the batch's device, so the noise is reproducible and never
leaves the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from aelab.config import CorruptionConfig, GaussianNoiseConfig, MaskingConfig, SaltAndPepperConfig


class Corruption:
    """Base class: `corrupt(x, generator)` returns a corrupted copy of `x` (values in [0, 1] stay there).

    A kind is one subclass naming its settings class (`settings`), whose fields other than `kind` are its
    constructor's arguments; `build_corruption` finds it by that class.
    """

    settings: ClassVar[type]

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class GaussianNoise(Corruption):
    """Additive N(0, sigma^2) noise, clipped to [0, 1] by default."""

    settings = GaussianNoiseConfig

    def __init__(self, sigma: float, clip: bool = True) -> None:
        self.sigma = sigma
        self.clip = clip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        noisy = x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return noisy.clamp_(0.0, 1.0) if self.clip else noisy


class SaltAndPepper(Corruption):
    """A fraction `ratio` of the entries is replaced, half by 0 (pepper) and half by 1 (salt)."""

    settings = SaltAndPepperConfig

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        out = torch.where(u < self.ratio / 2, torch.zeros_like(x), x)
        return torch.where((u >= self.ratio / 2) & (u < self.ratio), torch.ones_like(x), out)


class Masking(Corruption):
    """Masking noise (dropout of inputs): each entry is set to 0 with probability `p`."""

    settings = MaskingConfig

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep


class Compose(Corruption):
    """Apply corruptions in order."""

    def __init__(self, corruptions: Sequence[Corruption]) -> None:
        self.corruptions = list(corruptions)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        for corruption in self.corruptions:
            x = corruption(x, generator)
        return x


KINDS: dict[type, type[Corruption]] = {kind.settings: kind for kind in (GaussianNoise, SaltAndPepper, Masking)}
"""Every corruption kind, by its settings class."""


def build_corruption(configs: Sequence[CorruptionConfig]) -> Corruption | None:
    """The configured corruption, or None for none."""
    built = [KINDS[type(cfg)](**cfg.model_dump(exclude={"kind"})) for cfg in configs]
    if not built:
        return None
    return built[0] if len(built) == 1 else Compose(built)
