"""Denoising autoencoder: the encoder sees the corrupted input, the loss compares with the clean one."""

from __future__ import annotations

from torch import Tensor

from aelab.models.base import AutoencoderModule


class DenoisingAutoencoder(AutoencoderModule):
    variant = "denoising"

    def model_input(self, corrupted: Tensor, clean: Tensor) -> Tensor:
        return corrupted
