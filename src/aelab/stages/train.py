"""`aelab train --variant NAME`: train one variant, test its best checkpoint, save it and track it in MLflow.

`--variant tuned` trains the sparse variant with the best trial of `aelab tune` (`data/tune/best_params.yaml`).

Checkpoints go to `data/checkpoints/<variant>/<params digest>/`, outside DVC's outputs, so an interrupted or
failed run is resumed (same data order, noise and dropout) instead of lost; the finished model goes to
`data/models/<variant>/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from rich.console import Console

from aelab.config import DenoisingConfig, Params, flatten
from aelab.data.corruptions import build_corruption
from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData, load_prepared
from aelab.errors import AelabError
from aelab.models import VARIANT_CLASSES, build_module, module_options, save_model
from aelab.models.base import AutoencoderModule
from aelab.paths import BEST_PARAMS_FILE, MODELS_DIR, PREPARED_DIR, TUNED
from aelab.plots import image_grid
from aelab.tracking import mlflow_logger, run_tags, tracking_uri

CHECKPOINTS_DIR = Path("data/checkpoints")
COMPLETE_MARKER = "complete"


@dataclass
class TrainResult:
    module: AutoencoderModule
    metrics: dict[str, float]
    run_id: str | None


def build_datamodule(params: Params, variant: str, data: PreparedData) -> AutoencoderDataModule:
    cfg = params.variant(variant)
    corruption = build_corruption(cfg.corruption) if isinstance(cfg, DenoisingConfig) else None
    return AutoencoderDataModule(data, batch_size=params.train.batch_size, corruption=corruption, seed=params.seed)


def checkpoint_dir(params: Params, variant: str, data: PreparedData, name: str | None = None) -> Path:
    """One folder per (variant, training-relevant params, data): a changed config never resumes a stale run."""
    key = {
        "module": module_options(params, variant, data.n_features),
        "variant": params.variant(variant).model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "data": data.meta,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return CHECKPOINTS_DIR / (name or variant) / digest


def build_trainer(
    params: Params,
    ckpt_dir: Path | None,
    logger: Any,
    max_epochs: int | None = None,
    extra_callbacks: list[L.Callback] | tuple[L.Callback, ...] = (),
) -> L.Trainer:
    """The Trainer of every run; `ckpt_dir=None` writes no checkpoints (Optuna trials keep nothing on disk)."""
    t = params.train
    callbacks: list[L.Callback] = []
    if ckpt_dir is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_last=True)
        )
        if t.early_stopping_patience:
            callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=t.early_stopping_patience))
    callbacks.extend(extra_callbacks)
    return L.Trainer(
        max_epochs=max_epochs or t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
        default_root_dir=ckpt_dir,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
    )


def fit_trial(
    params: Params, variant: str, data: PreparedData, logger: Any, callbacks: list[L.Callback], max_epochs: int
) -> tuple[AutoencoderModule, L.Trainer]:
    """Train a fresh module the way `train_variant` does, for an Optuna trial: no checkpoints, no outputs.

    The caller reads `trainer.callback_metrics`; a diverging loss raises `TrainingError`, a pruned trial
    `optuna.TrialPruned` (from its callback), Ctrl-C `KeyboardInterrupt`.
    """
    L.seed_everything(params.seed, workers=True, verbose=False)
    module = build_module(params, variant, data.n_features)
    dm = build_datamodule(params, variant, data)
    trainer = build_trainer(params, None, logger, max_epochs=max_epochs, extra_callbacks=callbacks)
    try:
        trainer.fit(module, dm)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown followed by sys.exit(1)
        raise KeyboardInterrupt from None
    if trainer.interrupted:
        raise KeyboardInterrupt
    return module, trainer


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def log_artifacts(run_id: str, params: Params, module: AutoencoderModule, dm: AutoencoderDataModule, out: Path) -> None:
    """The sample grid and the model (with signature and input example) into the variant's MLflow run."""
    import mlflow
    from mlflow.models import infer_signature

    clean = dm.tensors["test"][:8]
    corrupted = dm.corrupt(clean, "test", 0, 0)
    with torch.no_grad():
        recon = module.eval()(module.model_input(corrupted, clean))
    fig = image_grid(
        {"clean": clean.numpy(), "corrupted": corrupted.numpy(), "reconstructed": recon.numpy()},
        dm.data.image_shape,
        title=f"{module.variant}: test samples",
    )
    fig.savefig(out / "samples.png", dpi=80)
    mlflow.set_tracking_uri(tracking_uri(params.tracking))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_figure(fig, "samples.png")
        if params.tracking.log_model:
            example = clean[:4].numpy()
            reconstructor = module.reconstructor().eval()
            with torch.no_grad():
                output = reconstructor(torch.from_numpy(example)).numpy()
            mlflow.pytorch.log_model(
                reconstructor,
                name="model",
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            )


def train_variant(
    params: Params, variant: str, data: PreparedData, out: Path = MODELS_DIR, name: str | None = None
) -> TrainResult:
    """Train `variant` (its class and params); `name` (default: the variant) names its outputs and MLflow run."""
    name = name or variant
    L.seed_everything(params.seed, workers=True, verbose=False)
    module = build_module(params, variant, data.n_features)
    dm = build_datamodule(params, variant, data)
    ckpt_dir = checkpoint_dir(params, variant, data, name)
    resume = ckpt_dir / "last.ckpt"
    state_file = ckpt_dir / "run.json"
    if (ckpt_dir / COMPLETE_MARKER).exists():  # a finished run being repeated starts afresh
        shutil.rmtree(ckpt_dir)
    previous = _read_json(state_file)
    logger = mlflow_logger(params.tracking, name, run_tags(name, _stage_name(name)), previous.get("run_id"))
    trainer = build_trainer(params, ckpt_dir, logger)
    if trainer.is_global_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"run_id": logger.run_id}))
        logger.log_hyperparams(flatten(params))
    trainer.fit(module, dm, ckpt_path=resume if resume.exists() else None)
    if trainer.interrupted:
        raise AelabError(f"{name}: training interrupted; run the same command again to resume from {ckpt_dir}")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        module = VARIANT_CLASSES[variant].load_from_checkpoint(best, map_location="cpu")
    tested = trainer.test(module, dm, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items())}
    metrics["best_epoch"] = int(torch.load(best, map_location="cpu", weights_only=False)["epoch"]) if best else -1
    metrics["epochs"] = int(trainer.current_epoch)
    module = module.cpu().eval()
    if trainer.is_global_zero:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        save_model(module, folder / "model.pt")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (folder / "run.json").write_text(json.dumps({"run_id": logger.run_id, "tracking_uri": logger._tracking_uri}))
        log_artifacts(logger.run_id, params, module, dm, folder)
        (ckpt_dir / COMPLETE_MARKER).touch()
    return TrainResult(module, metrics, logger.run_id)


def _stage_name(name: str) -> str:
    return "train_tuned" if name == TUNED else f"train@{name}"


def main(params: Params, variant: str) -> None:
    """`variant` is one of `VARIANTS`, or `tuned`: the tuned base variant with the best params of `aelab tune`."""
    name = variant
    if variant == TUNED:
        from aelab.stages.tune import tuned_params

        params, variant = tuned_params(params, BEST_PARAMS_FILE)
    result = train_variant(params, variant, load_prepared(PREPARED_DIR), name=name)
    summary = ", ".join(f"{k} {v:.5g}" for k, v in result.metrics.items())
    Console(stderr=True).print(f"trained {name}: {summary} (MLflow run {result.run_id})")
