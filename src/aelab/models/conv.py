"""Convolutional autoencoder for image data: conv blocks, a dense bottleneck code, a mirrored decoder.

Batches stay flat; the encoder reshapes them to the dataset's `image_shape` and the decoder flattens its logits,
so corruptions, the sparse penalty, `reduce` and `evaluate` work unchanged. The networks are built in `networks`.
"""

from __future__ import annotations

from aelab.models.layered import LayeredAutoencoder


class ConvAutoencoder(LayeredAutoencoder):
    variant = "conv"
    code_key = "code_dim"
