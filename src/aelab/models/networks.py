"""Plain `nn.Module` encoders and decoders; the LightningModule that trains them lives in `base.py`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def mlp(widths: Sequence[int], activation: str, dropout: float, last: nn.Module | None) -> nn.Sequential:
    """Linear layers through `widths`, with activation (and dropout) between them and `last` at the end."""
    layers: list[nn.Module] = []
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    for i, (n_in, n_out) in enumerate(pairs):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(pairs) - 1:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """input -> hidden_dims[0] -> ... -> hidden_dims[-1] (the code), with `code_activation` on the code."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        code_activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp([input_dim, *hidden_dims], activation, dropout, code_activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """The mirror of the encoder: code -> ... -> input size, returning logits (the module applies sigmoid)."""

    def __init__(
        self, output_dim: int, hidden_dims: Sequence[int], activation: str = "relu", dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.net = mlp([*reversed(hidden_dims), output_dim], activation, dropout, last=None)

    def forward(self, code: Tensor) -> Tensor:
        return self.net(code)


class Reconstructor(nn.Module):
    """Encoder + decoder + sigmoid as one plain module: what MLflow logs for inference."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x)).sigmoid()
