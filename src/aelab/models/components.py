"""The one place that builds networks: plain `nn.Module` encoders and decoders for every variant.

`EncoderStack` applies `layers[0], layers[1], ...`; `DecoderStack.layers[k]` mirrors encoder layer k and is applied
from the top down, so the pair k is a shallow autoencoder for the output of encoder layers `0..k-1` (what greedy
pre-training trains). Inputs and outputs stay flat `[n, features]` as the DataModule yields them: a convolutional
stack reshapes to the dataset's image shape in its first layer and flattens back in its last decoder layer. The
LightningModules that train these networks live in `base.py` and the variant modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from aelab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


Shape = tuple[int, int, int]


class EncoderStack(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def below(self, index: int) -> nn.Sequential:
        """The layers under layer `index` (sharing their parameters): the input transform of its phase."""
        return nn.Sequential(*self.layers[:index])


class DecoderStack(nn.Module):
    """`layers[k]` undoes encoder layer k; applied from the code down to `layers[0]`, which returns flat logits."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, code: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            code = layer(code)
        return code


def _activation_and_dropout(activation: str, dropout: float) -> list[nn.Module]:
    return [ACTIVATIONS[activation](), *([nn.Dropout(dropout)] if dropout > 0 else [])]


def mlp_stack(
    input_dim: int, hidden_dims: Sequence[int], activation: str, dropout: float, code_activation: nn.Module | None
) -> tuple[EncoderStack, DecoderStack]:
    """An MLP encoder through `hidden_dims` and its mirrored decoder, as one (Linear, mirrored Linear) pair per width.

    Every dense variant is built here. The layers are created encoder first (bottom up), then decoder (top down),
    so the random initial weights do not depend on how the layers are grouped.
    """
    widths = [input_dim, *hidden_dims]
    top = len(hidden_dims) - 1
    encoder_layers = []
    for k in range(len(hidden_dims)):
        tail = (
            _activation_and_dropout(activation, dropout)
            if k < top
            else [code_activation]
            if code_activation is not None
            else []
        )
        encoder_layers.append(nn.Sequential(nn.Linear(widths[k], widths[k + 1]), *tail))
    decoder_layers: list[nn.Module] = [nn.Identity()] * len(hidden_dims)
    for k in reversed(range(len(hidden_dims))):
        # Decoder layer k returns what encoder layer k-1 produced (activated), or logits for the input (k = 0).
        tail = _activation_and_dropout(activation, dropout) if k > 0 else []
        decoder_layers[k] = nn.Sequential(nn.Linear(widths[k + 1], widths[k]), *tail)
    return EncoderStack(encoder_layers), DecoderStack(decoder_layers)


# ---- convolutional stacks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockPlan:
    """Feature-map shapes through one encoder block: its input, after the convolution, after pooling."""

    input: Shape
    conv: Shape
    output: Shape


def conv_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a convolution with padding `kernel // 2`."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def plan_blocks(image_shape: Sequence[int], blocks: Sequence[Mapping[str, Any]], key: str) -> list[BlockPlan]:
    """Shapes through the encoder, rejecting a block that would shrink its input to nothing (naming the key)."""
    shape: Shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    plans = []
    for i, block in enumerate(blocks):
        _, h, w = shape
        where = f"{key}.blocks[{i}]"
        stride, pool = block["stride"], block["pool"]
        if stride > min(h, w):
            raise ConfigError(
                f"{where}.stride: stride {stride} on the {h}x{w} input of block {i} shrinks the image to nothing; "
                "use a smaller stride or fewer blocks"
            )
        conv = (block["channels"], conv_size(h, block["kernel"], stride), conv_size(w, block["kernel"], stride))
        if pool > min(conv[1], conv[2]):
            raise ConfigError(
                f"{where}.pool: pooling by {pool} on a {conv[1]}x{conv[2]} feature map shrinks it to nothing; "
                "use a smaller pool or fewer blocks"
            )
        if block["norm"] == "instance" and conv[1] * conv[2] < 2:
            raise ConfigError(f"{where}.norm: instance norm needs more than one position, block {i} leaves 1x1")
        output = (conv[0], conv[1] // pool, conv[2] // pool)
        plans.append(BlockPlan(shape, conv, output))
        shape = output
    return plans


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    return []


def _decoder_block(block: Mapping[str, Any], plan: BlockPlan, kind: str) -> list[nn.Module]:
    """Undo pooling, then the convolution, landing exactly on the block's input size (no cropping needed)."""
    channels, kernel, stride, pool = block["channels"], block["kernel"], block["stride"], block["pool"]
    c_in, h_in, w_in = plan.input
    _, h_conv, w_conv = plan.conv
    padding = kernel // 2
    layers: list[nn.Module] = []
    if pool > 1:
        if kind == "transposed":
            extra = (h_conv % pool, w_conv % pool)
            layers.append(nn.ConvTranspose2d(channels, channels, pool, stride=pool, output_padding=extra))
        else:
            layers.append(nn.Upsample(size=(h_conv, w_conv)))
    if kind == "transposed":
        # output_padding restores the rows the strided convolution dropped: always < stride, so always valid.
        extra = ((h_in + 2 * padding - kernel) % stride, (w_in + 2 * padding - kernel) % stride)
        layers.append(nn.ConvTranspose2d(channels, c_in, kernel, stride=stride, padding=padding, output_padding=extra))
    else:
        if (h_conv, w_conv) != (h_in, w_in):  # strided, or one row more from an even kernel's padding
            layers.append(nn.Upsample(size=(h_in, w_in)))
        layers.append(nn.Conv2d(channels, c_in, kernel, padding="same"))
    return layers


def conv_stack(
    image_shape: Sequence[int],
    blocks: Sequence[Mapping[str, Any]],
    code_dim: int,
    decoder: str,
    code_activation: nn.Module | None,
    key: str,
) -> tuple[EncoderStack, DecoderStack]:
    """One layer per conv block plus the dense bottleneck; each decoder layer mirrors its encoder layer.

    `blocks` are plain dicts (channels, kernel, stride, pool, norm, activation) so they can be saved as hparams.
    """
    plans = plan_blocks(image_shape, blocks, key)
    encoder_layers, decoder_layers = [], []
    for i, (block, plan) in enumerate(zip(blocks, plans, strict=True)):
        c_in = plan.input[0]
        encoder: list[nn.Module] = [nn.Unflatten(1, tuple(int(d) for d in image_shape))] if i == 0 else []
        encoder += [
            nn.Conv2d(c_in, block["channels"], block["kernel"], stride=block["stride"], padding=block["kernel"] // 2),
            *_norm(block["norm"], block["channels"]),
            ACTIVATIONS[block["activation"]](),
        ]
        if block["pool"] > 1:
            encoder.append(nn.MaxPool2d(block["pool"]))
        decoder_layer = _decoder_block(block, plan, decoder)
        if i == 0:
            decoder_layer.append(nn.Flatten())  # logits for the flat input
        else:  # the same normalisation and activation as the block below, whose output this reconstructs
            below = blocks[i - 1]
            decoder_layer += [*_norm(below["norm"], c_in), ACTIVATIONS[below["activation"]]()]
        encoder_layers.append(nn.Sequential(*encoder))
        decoder_layers.append(nn.Sequential(*decoder_layer))
    features = plans[-1].output
    n_features = features[0] * features[1] * features[2]
    encoder_layers.append(
        nn.Sequential(
            nn.Flatten(), nn.Linear(n_features, code_dim), *([code_activation] if code_activation is not None else [])
        )
    )
    decoder_layers.append(
        nn.Sequential(
            nn.Linear(code_dim, n_features), ACTIVATIONS[blocks[-1]["activation"]](), nn.Unflatten(1, features)
        )
    )
    return EncoderStack(encoder_layers), DecoderStack(decoder_layers)


class Reconstructor(nn.Module):
    """Encoder + decoder + sigmoid as one plain module: what MLflow logs for inference."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x)).sigmoid()
