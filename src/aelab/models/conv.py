"""Convolutional autoencoder for image data: conv blocks, a dense bottleneck code, a mirrored decoder.

Batches stay flat; the encoder reshapes them to the dataset's `image_shape` and the decoder flattens its logits,
so corruptions, the sparse penalty, `reduce` and `evaluate` work unchanged. The networks are built in `networks`.
With `transformation_weight` set, a head on the code also learns which rotation or flip was applied to an image
(`models.transformations`), and its cross-entropy is added to the loss.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from aelab.models.layered import LayeredAutoencoder
from aelab.models.transformations import build_transformation_head, transformation_loss


class ConvAutoencoder(LayeredAutoencoder):
    variant = "conv"
    code_key = "code_dim"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transform_head = build_transformation_head(self.hparams)

    def _losses(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        loss, recon, code, terms = super()._losses(batch)
        if self.transform_head is None:
            return loss, recon, code, terms
        x = self.model_input(*batch)
        shift = self.hparams.get("transformation_shift") or 0
        head_loss = transformation_loss(self.encoder, self.transform_head, x, self.hparams.image_shape, shift)
        terms = {**terms, "transformations": self.hparams.transformation_weight * head_loss}
        return loss + terms["transformations"], recon, code, terms
