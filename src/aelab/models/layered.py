"""Base of the stacked and convolutional variants: layer-stack networks, optional sparsity and corruption.

The encoder always sees the DataModule's corrupted batch: with no corruption configured it is the clean batch,
with one it makes the variant denoising. With `rho` set, the code is a sigmoid with the sparse variant's KL penalty.
"""

from __future__ import annotations

from torch import Tensor

from aelab.errors import ConfigError
from aelab.models.base import AutoencoderModule
from aelab.models.components import DecoderStack, EncoderStack
from aelab.models.sparse import kl_sparsity


class LayeredAutoencoder(AutoencoderModule):
    encoder: EncoderStack
    decoder: DecoderStack

    code_key = "hidden_dims"
    """The params key of the code size, for error messages."""

    @property
    def sparse(self) -> bool:
        return self.hparams.get("rho") is not None

    @property
    def n_layers(self) -> int:
        return len(self.encoder.layers)

    def layer_is_sparse(self, index: int) -> bool:
        """Whether pre-training layer `index` gets the KL penalty on its code (by default only the top layer)."""
        return self.sparse and index == self.n_layers - 1

    def check_dims(self) -> None:
        if not self.sparse and self.code_dim >= self.input_dim:
            raise ConfigError(
                f"variants.{self.variant}.{self.code_key}: code size {self.code_dim} must be smaller than the input "
                f"size {self.input_dim}; for an overcomplete code add variants.{self.variant}.sparsity"
            )

    def penalties(self, code: Tensor) -> dict[str, Tensor]:
        if not self.sparse:
            return {}
        return {"sparsity": self.hparams.beta * kl_sparsity(self.hparams.rho, code.mean(dim=0))}

    def model_input(self, corrupted: Tensor, clean: Tensor) -> Tensor:
        return corrupted

    def log_code_statistics(self, stage: str, code: Tensor, n: int) -> None:
        if self.sparse:
            self.accumulate(stage, "mean_activation", code.detach().mean(), n)
