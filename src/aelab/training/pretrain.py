"""Greedy layer-wise pre-training of the layered variants, run before end-to-end fine-tuning.

Each layer is one fit of a `GreedyLayerModule` with the variant's MLflow logger, so every phase has its own curves in
the run (`pretrain/layer1/loss`, `pretrain/layer1/val_loss`, ..., then `train/*`, `val/*`). A phase checkpoints
under `<checkpoint dir>/pretrain/layerK/` and, when finished, leaves `layerK.pt` (the whole model's weights): an
interrupted run resumes inside the phase it was in and skips the finished ones.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from aelab.config import Params
from aelab.data.datamodule import AutoencoderDataModule
from aelab.models.greedy import GreedyLayerModule
from aelab.models.layered import LayeredAutoencoder
from aelab.training.trainer import build_trainer, fit


def pretrain_layers(
    params: Params,
    variant: str,
    module: LayeredAutoencoder,
    dm: AutoencoderDataModule,
    logger: Any,
    ckpt_dir: Path | None,
    skip: bool = False,
    restart: bool = False,
) -> int:
    """Train the layers of `module` one by one, in place; returns the pre-training epochs (layers x epochs).

    `skip`: fine-tuning has already started (its checkpoint holds the pre-trained weights), count the epochs only.
    `restart`: ignore earlier phases (a finished run repeated, or `train.resume: false`); rank zero deletes them.
    `ckpt_dir=None`: no checkpoints (a phase interrupted starts again).
    """
    epochs = params.variant(variant).pretrain_epochs
    if skip:
        return module.n_layers * epochs
    folder = ckpt_dir / "pretrain" if ckpt_dir is not None else None
    if folder is not None and restart and rank_zero_only.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
    for index in range(module.n_layers):
        name = f"layer{index + 1}"
        finished = folder / f"{name}.pt" if folder is not None else None
        if finished is not None and finished.exists() and not restart:
            module.load_state_dict(torch.load(finished, map_location="cpu", weights_only=True))
            continue
        phase = GreedyLayerModule(module, index)
        phase_dir = folder / name if folder is not None else None
        trainer = build_trainer(params, phase_dir, logger, max_epochs=epochs, monitor=phase.monitor)
        last = phase_dir / "last.ckpt" if phase_dir is not None else None
        try:
            with warnings.catch_warnings():  # the frozen layers are in eval mode on purpose
                warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
                fit(trainer, phase, dm, ckpt_path=last if last is not None and last.exists() and not restart else None)
        finally:
            module.requires_grad_(True)
        if finished is not None and trainer.is_global_zero:
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, finished)
    module.train()  # the phases leave lower layers in eval mode, and Lightning keeps whatever mode it is given
    return module.n_layers * epochs
