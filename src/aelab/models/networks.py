"""Which networks each variant has, and trained models loaded for use, without Lightning.

`build_networks` is the one place that decides a variant's encoder and decoder: the LightningModules call it to
train them, and `load_networks` calls it to rebuild a saved model for inference. Importing this module costs
torch only (Lightning adds seconds per process, and `reduce` runs one process per method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aelab.errors import CheckpointError, ConfigError
from aelab.models.components import DecoderStack, EncoderStack, conv_stack, mlp_stack
from aelab.models.transformations import build_transformation_head

Networks = tuple[EncoderStack, DecoderStack]


def _sparse_code(hparams: Mapping[str, Any]) -> bool:
    """Layered variants take an optional KL sparsity penalty, which needs sigmoid code units."""
    return hparams.get("rho") is not None


def _dense(variant: str, hp: Mapping[str, Any]) -> Networks:
    return mlp_stack(hp["input_dim"], hp["hidden_dims"], hp["activation"], hp["dropout"], None)


def _sparse(variant: str, hp: Mapping[str, Any]) -> Networks:
    return mlp_stack(hp["input_dim"], hp["hidden_dims"], hp["activation"], hp["dropout"], nn.Sigmoid())


def _stacked(variant: str, hp: Mapping[str, Any]) -> Networks:
    """With sparsity every unit is a sigmoid: each pre-training phase puts the KL penalty on its own code."""
    sparse = _sparse_code(hp)
    activation = "sigmoid" if sparse else hp["activation"]
    return mlp_stack(hp["input_dim"], hp["hidden_dims"], activation, hp["dropout"], nn.Sigmoid() if sparse else None)


def _conv(variant: str, hp: Mapping[str, Any]) -> Networks:
    key = f"variants.{variant}"
    shape = hp.get("image_shape")
    if not shape:
        raise ConfigError(
            f"{key}: needs image data, but the prepared dataset has no image_shape; use an image source or set "
            "data.image_shape [channels, height, width] for an array source"
        )
    if math.prod(shape) != hp["input_dim"]:
        raise ConfigError(f"{key}: image_shape {list(shape)} does not match the {hp['input_dim']} input features")
    code_activation = nn.Sigmoid() if _sparse_code(hp) else None
    return conv_stack(shape, hp["blocks"], hp["hidden_dims"][-1], hp["decoder"], code_activation, key)


BUILDERS: dict[str, Callable[[str, Mapping[str, Any]], Networks]] = {
    "autoencoder": _dense,  # the base LightningModule, used on its own in tests and benchmarks
    "undercomplete": _dense,
    "denoising": _dense,
    "sparse": _sparse,
    "stacked": _stacked,
    "conv": _conv,
    "stacked_conv": _conv,
}


def build_networks(variant: str, hparams: Mapping[str, Any]) -> Networks:
    """The encoder (flat input -> code) and decoder (code -> flat logits) of `variant` with its constructor
    arguments `hparams` (as the LightningModule saves them).

    Layers are created in one fixed order (encoder bottom up, then decoder), so a seed gives the same weights.
    """
    builder = BUILDERS.get(variant)
    if builder is None:
        raise ConfigError(f"variant {variant!r}: unknown; known: {', '.join(BUILDERS)}")
    return builder(variant, hparams)


class EncodeDecode:
    """Codes and reconstructions from `self.encoder`, `self.decoder` and `self.hidden_dims`: the one definition the
    training LightningModules and the inference `Autoencoder` share."""

    encoder: nn.Module
    decoder: nn.Module
    hidden_dims: list[int]

    @property
    def code_dim(self) -> int:
        return self.hidden_dims[-1]

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        """Reconstructions in [0, 1]: the decoder returns logits, as the training loss expects."""
        return self.decoder(code).sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


class Autoencoder(EncodeDecode, nn.Module):
    """A variant's trained encoder and decoder for inference: what serving and `reduce` use, without the training
    machinery (loss, optimiser, metrics, Lightning). Its state dict has the LightningModule's network keys."""

    def __init__(self, variant: str, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.variant = variant
        self.hparams = dict(hparams)
        self.input_dim = int(hparams["input_dim"])
        self.hidden_dims = [int(d) for d in hparams["hidden_dims"]]
        self.encoder, self.decoder = build_networks(variant, hparams)
        self.transform_head = build_transformation_head(hparams)
        """The transformation-prediction head of a conv model trained with one, else None."""


def save_model(module: nn.Module, path: Path) -> None:
    """Weights and constructor arguments of a LightningModule variant (or an `Autoencoder`) only: the file loads
    with `torch.load(weights_only=True)`, so opening it runs no code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(module.hparams).items()}
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"variant": module.variant, "hparams": hparams, "state_dict": state}, path)


def read_model_file(path: Path) -> dict[str, Any]:
    """The saved `variant`, `hparams` and `state_dict`; an unreadable or foreign file is a `CheckpointError`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found; run `aelab train` first") from None
    except Exception as err:  # noqa: BLE001 - anything torch or pickle raises means the same to the user
        raise CheckpointError(f"{path}: not a readable aelab model file ({type(err).__name__}: {err})") from None
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("variant"), str)
        and isinstance(payload.get("hparams"), dict)
        and isinstance(payload.get("state_dict"), dict)
    ):
        raise CheckpointError(f"{path}: not a readable aelab model file (no variant, hparams and state_dict)")
    return payload


def load_networks(path: Path) -> Autoencoder:
    """A saved model rebuilt for inference (eval mode), without Lightning.

    Only the network weights are read (keys under `encoder.` and `decoder.`, and `transform_head.` where the model
    has one); a missing or misshapen one is a `CheckpointError` naming the file.
    """
    payload = read_model_file(path)
    try:
        model = Autoencoder(payload["variant"], payload["hparams"])
    except Exception as err:  # noqa: BLE001 - a bad variant or hparams mean the file is not usable
        raise CheckpointError(f"{path}: not a readable aelab model file ({type(err).__name__}: {err})") from None
    networks = ("encoder.", "decoder.", "transform_head.")
    state = {k: v for k, v in payload["state_dict"].items() if k.startswith(networks)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path}: missing network weights {', '.join(missing[:3])}{more}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = " ".join(str(err).split())  # torch lists each mismatch on its own line
        raise CheckpointError(f"{path}: weights do not fit the {payload['variant']} networks ({reason})") from None
    return model.eval()
