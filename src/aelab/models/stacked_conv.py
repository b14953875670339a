"""Stacked convolutional autoencoder: the convolutional variant with each conv block (and then the dense
bottleneck) pre-trained greedily on the feature maps of the frozen blocks below, then fine-tuned end to end.
"""

from __future__ import annotations

from aelab.models.conv import ConvAutoencoder


class StackedConvAutoencoder(ConvAutoencoder):
    variant = "stacked_conv"
