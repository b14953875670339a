"""Undercomplete autoencoder: the bottleneck (code smaller than the input) is the only regulariser."""

from __future__ import annotations

from aelab.errors import ConfigError
from aelab.models.base import AutoencoderModule


class UndercompleteAutoencoder(AutoencoderModule):
    variant = "undercomplete"

    def check_dims(self) -> None:
        if self.code_dim >= self.input_dim:
            raise ConfigError(
                f"variants.undercomplete.hidden_dims: code size {self.code_dim} must be smaller than the input size "
                f"{self.input_dim}; for an overcomplete code use the sparse variant"
            )
