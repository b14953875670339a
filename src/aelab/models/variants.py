"""The LightningModule of each variant, built from validated params, and rebuilt from a saved model file to train on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aelab.config import ConvConfig, DenseConfig, Params, SparseConfig, UndercompleteConfig
from aelab.errors import CheckpointError
from aelab.models.base import AutoencoderModule
from aelab.models.conv import ConvAutoencoder
from aelab.models.denoising import DenoisingAutoencoder
from aelab.models.networks import read_model_file
from aelab.models.schedule import schedule_options
from aelab.models.sparse import SparseAutoencoder
from aelab.models.stacked import StackedAutoencoder
from aelab.models.stacked_conv import StackedConvAutoencoder
from aelab.models.undercomplete import UndercompleteAutoencoder

VARIANT_CLASSES: dict[str, type[AutoencoderModule]] = {
    "undercomplete": UndercompleteAutoencoder,
    "sparse": SparseAutoencoder,
    "denoising": DenoisingAutoencoder,
    "stacked": StackedAutoencoder,
    "conv": ConvAutoencoder,
    "stacked_conv": StackedConvAutoencoder,
}


def module_options(
    params: Params, variant: str, input_dim: int, image_shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """Constructor arguments for a variant (plain JSON-like values): shared model and training settings plus its own.

    `image_shape` ([channels, height, width] of the prepared data) is what convolutional variants reshape to.
    """
    cfg = params.variant(variant)
    options: dict[str, Any] = {
        "input_dim": input_dim,
        "hidden_dims": list(cfg.hidden_dims) if isinstance(cfg, DenseConfig) else [cfg.code_dim],
        "activation": params.model.activation,
        "dropout": params.model.dropout,
        "loss": params.model.loss,
        "lr": params.train.lr,
        "weight_decay": params.train.weight_decay,
        "optimizer": params.train.optimizer,
        "seed": params.seed,
        "check_finite_every_n_steps": params.train.check_finite_every_n_steps,
        **schedule_options(params.train),
    }
    if isinstance(cfg, SparseConfig):
        options.update(rho=cfg.rho, beta=cfg.beta)
    if isinstance(cfg, UndercompleteConfig) and cfg.neighbours is not None:
        options.update(neighbours=cfg.neighbours.model_dump())
    if cfg.layered:  # an optional sigmoid code with the KL penalty
        sparsity = cfg.sparsity
        options.update(rho=sparsity.rho if sparsity else None, beta=sparsity.beta if sparsity else 0.0)
    if isinstance(cfg, ConvConfig):
        activation = params.model.activation
        options.update(
            image_shape=[int(d) for d in image_shape] if image_shape else None,
            blocks=[{**b.model_dump(), "activation": b.activation or activation} for b in cfg.blocks],
            decoder=cfg.decoder,
        )
        if cfg.transformations is not None:
            options.update(
                transformation_weight=cfg.transformations.weight, transformation_shift=cfg.transformations.shift
            )
    return options


def build_module(
    params: Params, variant: str, input_dim: int, image_shape: Sequence[int] | None = None
) -> AutoencoderModule:
    return VARIANT_CLASSES[variant](**module_options(params, variant, input_dim, image_shape))


def load_model(path: Path) -> AutoencoderModule:
    """Rebuild a saved variant as its LightningModule (to train or inspect it further; to use a trained model,
    `networks.load_networks` needs no Lightning). Any unreadable or foreign file is a `CheckpointError` naming it."""
    payload = read_model_file(path)
    try:
        module = VARIANT_CLASSES[payload["variant"]](**payload["hparams"])
        module.load_state_dict(payload["state_dict"])
    except Exception as err:  # noqa: BLE001 - anything torch raises means the same to the user
        raise CheckpointError(f"{path}: not a readable aelab model file ({type(err).__name__}: {err})") from None
    return module.eval()
