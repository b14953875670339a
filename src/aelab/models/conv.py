"""Convolutional autoencoder for image data: conv blocks, a dense bottleneck code, a mirrored decoder.

Batches stay flat; the encoder reshapes them to the dataset's `image_shape` and the decoder flattens its logits,
so corruptions, the sparse penalty, `reduce` and `evaluate` work unchanged.
"""

from __future__ import annotations

import math

from aelab.errors import ConfigError
from aelab.models.components import DecoderStack, EncoderStack, conv_stack
from aelab.models.layered import LayeredAutoencoder


class ConvAutoencoder(LayeredAutoencoder):
    variant = "conv"
    code_key = "code_dim"

    def build_networks(self) -> tuple[EncoderStack, DecoderStack]:
        hp = self.hparams
        key = f"variants.{self.variant}"
        shape = hp.get("image_shape")
        if not shape:
            raise ConfigError(
                f"{key}: needs image data, but the prepared dataset has no image_shape; use an image source or set "
                "data.image_shape [channels, height, width] for an array source"
            )
        if math.prod(shape) != self.input_dim:
            raise ConfigError(f"{key}: image_shape {list(shape)} does not match the {self.input_dim} input features")
        return conv_stack(shape, hp.blocks, self.code_dim, hp.decoder, self.code_activation(), key)
