"""`aelab train --variant NAME`: train one variant, test its best checkpoint, save it and track it in MLflow.

`--variant tuned` trains the sparse variant with the best trial of `aelab tune` (`data/tune/best_params.yaml`).

Checkpoints go to `data/checkpoints/<variant>/<params digest>/`, outside DVC's outputs, so an interrupted or
failed run is resumed (same data order, noise and dropout) instead of lost; the finished model goes to
`data/models/<variant>/`.

Distributed runs (Lightning DDP on one machine, torchrun or SLURM across nodes) execute this whole function in
every process; everything written outside Lightning (run.json, the model folder, MLflow artifacts) is written by
global rank zero only, and the non-zero ranks never create an MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerStatus
from rich.console import Console

from aelab.config import Params, flatten
from aelab.data.corruptions import build_corruption
from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData, load_prepared
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
    corruption = build_corruption(cfg.corruption) if hasattr(cfg, "corruption") else None  # denoising, deep variants
    return AutoencoderDataModule(
        data,
        batch_size=params.train.batch_size,
        corruption=corruption,
        seed=params.seed,
        on_training_device=params.train.data_on_device,
    )


# Where and how fast a training runs, not what it computes: a run preempted on 4 GPUs may resume on 2 (the global
# batch does not depend on the number of processes), or with another logging interval.
PLACEMENT_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "progress_bar",
        "log_every_n_steps",
        "check_finite_every_n_steps",
        "compile",
        "data_on_device",
        "resume",
    }
)


def checkpoint_dir(params: Params, variant: str, data: PreparedData, name: str | None = None) -> Path:
    """One folder per (variant, training-relevant params, data): a changed config never resumes a stale run."""
    module = module_options(params, variant, data.n_features, data.image_shape)
    train = params.train.model_dump(mode="json")
    key = {
        "module": {k: v for k, v in module.items() if k not in PLACEMENT_KEYS},
        "variant": params.variant(variant).model_dump(mode="json"),
        "train": {k: v for k, v in train.items() if k not in PLACEMENT_KEYS},
        "data": data.meta,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return CHECKPOINTS_DIR / (name or variant) / digest


class FreshStart(L.Callback):
    """Empties the checkpoint folder of a finished run once every process has decided not to resume from it.

    Runs in `setup`, after the process group exists, so that under torchrun/SLURM (all ranks starting at once) no
    rank deletes files another rank is still looking at.
    """

    def __init__(self, ckpt_dir: Path, enabled: bool) -> None:
        self.ckpt_dir, self.enabled = ckpt_dir, enabled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        trainer.strategy.barrier("aelab-fresh-start")
        if trainer.is_global_zero:
            for path in self.ckpt_dir.glob("*.ckpt"):
                path.unlink()
            (self.ckpt_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        trainer.strategy.barrier("aelab-fresh-start-done")


def build_trainer(
    params: Params,
    ckpt_dir: Path | None,
    logger: Any,
    max_epochs: int | None = None,
    callbacks: list[L.Callback] | None = None,
    monitor: str = "val/loss",
    **overrides: Any,
) -> L.Trainer:
    """The Trainer every path uses (training, tuning, `aelab bench`, pre-training phases with their own `monitor`);
    `ckpt_dir=None` disables checkpoints."""
    # Lightning resets its loggers to INFO on import; its hardware banners and tips are noise in a pipeline log.
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t = params.train
    callbacks = list(callbacks or [])
    if ckpt_dir is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_last=True)
        )
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=t.early_stopping_patience))
    options: dict[str, Any] = dict(
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
        # The DataModule shards its epoch permutation per rank itself; a DistributedSampler would shard it again.
        use_distributed_sampler=False,
    )
    options.update(overrides)
    return L.Trainer(**options)


def fit_or_interrupt(
    trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule, **fit_kwargs: Any
) -> None:
    """`trainer.fit`, with Ctrl-C surfacing as `KeyboardInterrupt` (the CLI exits 130 and says how to resume).

    Lightning shuts down gracefully on Ctrl-C, then either returns with `trainer.interrupted` set or calls
    `sys.exit(1)`; every training path (pipeline, Optuna trials, one-class models, pre-training phases) goes through
    here so that none of them mistakes an interrupted fit for a finished one.
    """
    try:
        trainer.fit(module, dm, **fit_kwargs)
    except SystemExit:
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt


def best_module(trainer: L.Trainer, variant: str, module: AutoencoderModule) -> AutoencoderModule:
    """The lowest-`val/loss` checkpoint of this fit, or `module` itself where none was written."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return VARIANT_CLASSES[variant].load_from_checkpoint(best, map_location="cpu") if best else module


def fit_trial(
    params: Params, variant: str, data: PreparedData, logger: Any, callbacks: list[L.Callback], max_epochs: int
) -> tuple[AutoencoderModule, L.Trainer]:
    """Train a fresh module the way `train_variant` does, for an Optuna trial: no checkpoints, no outputs.

    The caller reads `trainer.callback_metrics`; a diverging loss raises `TrainingError`, a pruned trial
    `optuna.TrialPruned` (from its callback), Ctrl-C `KeyboardInterrupt`.
    """
    L.seed_everything(params.seed, workers=True, verbose=False)
    module = build_module(params, variant, data.n_features, data.image_shape)
    dm = build_datamodule(params, variant, data)
    trainer = build_trainer(params, None, logger, max_epochs=max_epochs, callbacks=callbacks)
    fit_or_interrupt(trainer, module, dm)
    return module, trainer


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def log_artifacts(run_id: str, params: Params, module: AutoencoderModule, dm: AutoencoderDataModule, out: Path) -> None:
    """The sample grid and the model (with signature and input example) into the variant's MLflow run."""
    import mlflow
    from mlflow.models import infer_signature

    clean = torch.from_numpy(dm.data.test.x[:8].copy())  # on CPU, and set up also after ddp_spawn
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
    params: Params,
    variant: str,
    data: PreparedData,
    out: Path = MODELS_DIR,
    name: str | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train `variant` (its class and params); `name` (default: the variant) names its outputs and MLflow run.

    `run_name`/`extra_tags`: for auxiliary runs (the stacked variants' from-scratch baseline, a child run).
    """
    name = name or variant
    L.seed_everything(params.seed, workers=True, verbose=False)
    module = build_module(params, variant, data.n_features, data.image_shape)
    cfg = params.variant(variant)
    dm = build_datamodule(params, variant, data)
    ckpt_dir = checkpoint_dir(params, variant, data, name)
    resume = ckpt_dir / "last.ckpt"
    state_file = ckpt_dir / "run.json"
    # Every process takes the same decision from the same files; rank zero clears them later (`FreshStart`).
    finished = (ckpt_dir / COMPLETE_MARKER).exists()
    fresh = finished or not params.train.resume or not resume.exists()
    previous = {} if finished or not params.train.resume else _read_json(state_file)
    is_zero = rank_zero_only.rank == 0
    # Only rank zero opens the tracking store: under torchrun/SLURM all ranks start together, and two processes
    # initialising one SQLite store at once fail ("table ... already exists").
    logger: Any = False
    if is_zero:
        tags = {**run_tags(name, _stage_name(name)), **(extra_tags or {})}
        logger = mlflow_logger(params.tracking, run_name or name, tags, previous.get("run_id"))
    trainer = build_trainer(
        params, ckpt_dir, logger, getattr(cfg, "max_epochs", None), callbacks=[FreshStart(ckpt_dir, enabled=fresh)]
    )
    if is_zero and trainer.is_global_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if previous.get("run_id"):
            logger.experiment.update_run(logger.run_id, status="RUNNING")  # continued, not duplicated
        state_file.write_text(json.dumps({"run_id": logger.run_id}))
        # The global batch is `train.batch_size`, split over `world_size` processes (see AutoencoderDataModule).
        logger.log_hyperparams({**flatten(params), "world_size": trainer.world_size})
    if not fresh and is_zero:
        Console(stderr=True).print(f"{name}: resuming from {resume} (MLflow run {previous.get('run_id')})")
    pretrain_epochs = 0
    if getattr(cfg, "pretrain", False):  # stacked variants: greedy layer-wise phases first (each resumable)
        from aelab.stages.pretrain import pretrain_layers

        restart = finished or not params.train.resume
        pretrain_epochs = pretrain_layers(
            params, variant, module, dm, logger, ckpt_dir, skip=not fresh, restart=restart
        )
    compiled = torch.compile(module) if params.train.compile else module
    fit_or_interrupt(trainer, compiled, dm, ckpt_path=None if fresh else resume)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    module = best_module(trainer, variant, module)
    tested = trainer.test(module, dm, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items())}
    metrics["best_epoch"] = int(torch.load(best, map_location="cpu", weights_only=False)["epoch"]) if best else -1
    metrics["epochs"] = int(trainer.current_epoch)
    if metrics["epochs"] == 0 and resume.exists():  # ddp_spawn trains in child processes: ask the checkpoint
        metrics["epochs"] = int(torch.load(resume, map_location="cpu", weights_only=False)["epoch"]) + 1
    if hasattr(cfg, "pretrain"):
        metrics["total_epochs"] = pretrain_epochs + metrics["epochs"]
    if getattr(cfg, "compare_scratch", False) and pretrain_epochs:
        from aelab.stages.pretrain import scratch_baseline

        scratch = scratch_baseline(
            params, variant, data, out, int(metrics["total_epochs"]), logger.run_id if logger else ""
        )
        metrics.update(scratch)
        if logger:
            logger.log_metrics({k: v for k, v in scratch.items() if k.startswith("scratch/test/")})
    module = module.cpu().eval()
    if is_zero and trainer.is_global_zero:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        save_model(module, folder / "model.pt")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        (folder / "run.json").write_text(
            json.dumps({"run_id": logger.run_id, "tracking_uri": tracking_uri(params.tracking)})
        )
        log_artifacts(logger.run_id, params, module, dm, folder)
        (ckpt_dir / COMPLETE_MARKER).touch()
    return TrainResult(module, metrics, logger.run_id if logger else None)


def fit_module(
    params: Params,
    variant: str,
    data: PreparedData,
    ckpt_dir: Path,
    max_epochs: int | None = None,
    hidden_dims: list[int] | None = None,
) -> AutoencoderModule:
    """Train a variant on the given arrays and return its best (lowest `val/loss`) module, on the CPU.

    For models that are not pipeline outputs (the per-class models of the one-class evaluation): nothing is
    written to `data/models` and no MLflow run is opened. Checkpoints in `ckpt_dir` make it resumable. Stacked
    variants are pre-trained layer by layer first, as `train_variant` does.
    """
    L.seed_everything(params.seed, workers=True, verbose=False)
    options = module_options(params, variant, data.n_features, data.image_shape)
    if hidden_dims:
        options["hidden_dims"] = list(hidden_dims)
    module = VARIANT_CLASSES[variant](**options)
    dm = build_datamodule(params, variant, data)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume = ckpt_dir / "last.ckpt"
    if getattr(params.variant(variant), "pretrain", False):
        from aelab.stages.pretrain import pretrain_layers

        pretrain_layers(params, variant, module, dm, False, ckpt_dir, skip=resume.exists())
    trainer = build_trainer(params, ckpt_dir, logger=False, max_epochs=max_epochs)
    fit_or_interrupt(trainer, module, dm, ckpt_path=resume if resume.exists() else None)
    return best_module(trainer, variant, module).cpu().eval()


def _stage_name(name: str) -> str:
    return "train_tuned" if name == TUNED else f"train@{name}"


def main(params: Params, variant: str) -> None:
    """`variant` is one of `VARIANTS`, or `tuned`: the tuned base variant with the best params of `aelab tune`."""
    name = variant
    if variant == TUNED:
        from aelab.stages.tune import tuned_params

        params, variant = tuned_params(params, BEST_PARAMS_FILE)
    result = train_variant(params, variant, load_prepared(PREPARED_DIR), name=name)
    if result.run_id is None:  # a non-zero DDP rank: rank zero reports
        return
    summary = ", ".join(f"{k} {v:.5g}" for k, v in result.metrics.items())
    Console(stderr=True).print(f"trained {name}: {summary} (MLflow run {result.run_id})")
