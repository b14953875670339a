"""Greedy layer-wise pre-training for the stacked variants, run by `aelab train` before end-to-end fine-tuning.

Each layer is one `Trainer.fit` of a `GreedyLayerModule` with the variant's MLflow logger, so every phase has its
own curves in the run (`pretrain/layer1/loss`, `pretrain/layer1/val_loss`, ..., then `train/*`, `val/*`). A phase
checkpoints under `<checkpoint dir>/pretrain/layerK/` and, when finished, leaves `layerK.pt` (the whole model's
weights): an interrupted run resumes inside the phase it was in and skips the finished ones.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from aelab.config import Params, validate_params
from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData
from aelab.models.greedy import GreedyLayerModule
from aelab.models.layered import LayeredAutoencoder
from aelab.stages.train import build_trainer, fit_or_interrupt


def pretrain_layers(
    params: Params,
    variant: str,
    module: LayeredAutoencoder,
    dm: AutoencoderDataModule,
    logger: Any,
    ckpt_dir: Path,
    skip: bool = False,
    restart: bool = False,
) -> int:
    """Train the layers of `module` one by one, in place; returns the pre-training epochs (layers x epochs).

    `skip`: fine-tuning has already started (its checkpoint holds the pre-trained weights), count the epochs only.
    `restart`: ignore earlier phases (a finished run repeated, or `train.resume: false`); rank zero deletes them.
    """
    epochs = params.variant(variant).pretrain_epochs
    if skip:
        return module.n_layers * epochs
    folder = ckpt_dir / "pretrain"
    if restart and rank_zero_only.rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
    for index in range(module.n_layers):
        name = f"layer{index + 1}"
        finished = folder / f"{name}.pt"
        if finished.exists() and not restart:
            module.load_state_dict(torch.load(finished, map_location="cpu", weights_only=True))
            continue
        phase = GreedyLayerModule(module, index)
        trainer = build_trainer(params, folder / name, logger, max_epochs=epochs, monitor=phase.monitor)
        last = folder / name / "last.ckpt"
        try:
            with warnings.catch_warnings():  # the frozen layers are in eval mode on purpose
                warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
                fit_or_interrupt(trainer, phase, dm, ckpt_path=last if last.exists() and not restart else None)
        finally:
            module.requires_grad_(True)
        if trainer.is_global_zero:
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, finished)
    module.train()  # the phases leave lower layers in eval mode, and Lightning keeps whatever mode it is given
    return module.n_layers * epochs


def scratch_baseline(
    params: Params, variant: str, data: PreparedData, out: Path, total_epochs: int, parent_run_id: str
) -> dict[str, float]:
    """The same network trained end to end from scratch for the same total epochs, for the pre-training comparison.

    An ordinary `train` run (params `pretrain: false`), written to `<out>/<variant>/scratch/<variant>/`, tracked as a
    child of the variant's MLflow run named `<variant>/scratch`.
    """
    from aelab.stages.train import train_variant

    raw = params.model_dump(mode="json")
    raw["variants"][variant].update(pretrain=False, compare_scratch=False, max_epochs=total_epochs)
    raw["tracking"]["log_model"] = False
    scratch_params = validate_params(raw, f"variants.{variant} (scratch baseline)")
    tags = {"mlflow.parentRunId": parent_run_id, "aelab.role": "scratch_baseline"}
    scratch = train_variant(
        scratch_params, variant, data, out / variant / "scratch", run_name=f"{variant}/scratch", extra_tags=tags
    )
    return {f"scratch/{key}": value for key, value in scratch.metrics.items()}
