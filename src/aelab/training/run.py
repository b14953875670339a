"""Training a variant: `fit_module` (the one fit of every path) and `train_variant` (a pipeline run with outputs).

Checkpoints go to `data/checkpoints/<name>/<run digest>/`, outside DVC's outputs, so an interrupted or failed run is
resumed (same data order, noise and dropout) instead of lost; the finished model goes to `data/models/<name>/`.

Distributed runs (Lightning DDP on one machine, torchrun or SLURM across nodes) execute `train_variant` in every
process; everything written outside Lightning (the checkpoint folder's run.json, the model folder, MLflow
artifacts) is written by global rank zero only, and the non-zero ranks never create an MLflow run.

The model folder holds nothing run-specific (no run id, no timestamp): a retrain with bit-identical weights leaves the
DVC output unchanged. The MLflow run is found from the model file instead (`aelab.training.lookup`), and the
training curves (DVCLive, `dvclive/` in the model folder) are `dvc plots`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from rich.console import Console

from aelab.config import Params
from aelab.data.corruptions import build_corruption
from aelab.data.datamodule import AutoencoderDataModule
from aelab.data.prepared import PreparedData
from aelab.fileio import FolderLock, quarantine
from aelab.models import VARIANT_CLASSES, build_module, module_options
from aelab.models.base import AutoencoderModule
from aelab.paths import CHECKPOINTS_DIR, COMPLETE_MARKER, MODEL_FILE, MODELS_DIR, TUNED
from aelab.serving.bundle import write_bundle
from aelab.tracking import mlflow_logger, run_tags
from aelab.training.checkpoints import resume_point
from aelab.training.digest import digest, epochs, without_placement
from aelab.training.mlrun import describe_experiment, log_dataset, run_params, tag_model
from aelab.training.pretrain import pretrain_layers
from aelab.training.trainer import FreshStart, build_trainer, fit


@dataclass
class Fitted:
    module: AutoencoderModule
    """The lowest-`val/loss` module of the fit (the last one where no checkpoint was written)."""
    trainer: L.Trainer
    datamodule: AutoencoderDataModule
    """The data it was fitted on (the trainer forgets it under `ddp_spawn`, which fits in child processes)."""
    pretrain_epochs: int
    best_path: str
    best_score: float | None
    """The lowest `val/loss` of the fit: what the checkpoint was chosen on (None without checkpointing)."""


@dataclass
class TrainResult:
    module: AutoencoderModule
    metrics: dict[str, float]
    run_id: str | None


def build_datamodule(params: Params, variant: str, data: PreparedData) -> AutoencoderDataModule:
    cfg = params.variant(variant)
    neighbours = getattr(cfg, "neighbours", None)  # the undercomplete variant's neighbourhood loss
    return AutoencoderDataModule(
        data,
        batch_size=params.train.batch_size,
        corruption=build_corruption(cfg.corruption),
        seed=params.seed,
        on_training_device=params.train.data_on_device,
        neighbours=neighbours.k if neighbours else 0,
        steps_per_call=params.train.steps_per_call,
    )


def checkpoint_dir(params: Params, variant: str, data: PreparedData, root: Path) -> Path:
    """`root/<run digest>`: one folder per (variant, training-relevant params, data), so a changed config never
    resumes a stale run."""
    module = module_options(params, variant, data.n_features, data.image_shape)
    train = without_placement(params.train.model_dump(mode="json", exclude={"max_epochs"}))
    key = {
        "module": without_placement(module),
        "variant": params.variant(variant).model_dump(mode="json"),
        "train": train,
        "epochs": epochs(params, variant),
        "data": data.meta,
    }
    return root / digest(key)


def fit_module(
    params: Params,
    variant: str,
    data: PreparedData,
    ckpt_dir: Path | None = None,
    logger: Any = False,
    callbacks: list[L.Callback] | None = None,
    restart: bool = False,
    on_trainer: Callable[[L.Trainer, bool], None] | None = None,
) -> Fitted:
    """Train `variant` on `data` the one way every path does (pipeline, one-class models, Optuna trials).

    With `ckpt_dir`, the fit checkpoints there (atomically) and resumes from `last.ckpt`, else `best.ckpt`, unless
    `restart`; an unreadable checkpoint is moved aside with a one-line warning, never a dead end. Layered variants
    with `pretrain` are pre-trained greedily first (each phase resumable). `on_trainer(trainer, fresh)` runs once
    the trainer exists, before any training (the pipeline opens its MLflow run there). A diverging loss raises
    `TrainingError`, Ctrl-C `KeyboardInterrupt`.
    """
    L.seed_everything(params.seed, workers=True, verbose=False)
    module = build_module(params, variant, data.n_features, data.image_shape)
    dm = build_datamodule(params, variant, data)
    # `last.ckpt`, else `best.ckpt`; an unreadable one is moved aside (`*.corrupt`) and never blocks the run
    resume_from = None if restart or ckpt_dir is None else resume_point(ckpt_dir)
    fresh = resume_from is None
    callbacks = list(callbacks or [])
    if ckpt_dir is not None:
        callbacks.append(FreshStart(ckpt_dir, enabled=fresh))
    trainer = build_trainer(params, ckpt_dir, logger, epochs(params, variant), callbacks=callbacks)
    if on_trainer is not None:
        on_trainer(trainer, fresh)
    pretrain_epochs = 0
    if params.variant(variant).pretrain:  # greedy layer-wise phases first (each resumable)
        skip = not fresh  # fine-tuning has started: its checkpoint holds the pre-trained weights
        pretrain_epochs = pretrain_layers(params, variant, module, dm, logger, ckpt_dir, skip=skip, restart=restart)
    compiled = torch.compile(module) if params.train.compile else module
    fit(trainer, compiled, dm, ckpt_path=resume_from, weights_only=True)
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback else ""
    score = callback.best_model_score if callback else None
    if best:
        module = VARIANT_CLASSES[variant].load_from_checkpoint(best, map_location="cpu", weights_only=True)
    return Fitted(module, trainer, dm, pretrain_epochs, best, None if score is None else float(score))


def _read_json(path: Path) -> dict[str, Any]:
    """The run state of an interrupted training; an unreadable one is moved aside (the run continues in a new
    MLflow run) rather than stopping the training with a traceback."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        quarantine(path, f"not JSON: {err}")
        return {}


def _checkpoint_epoch(path: Path | str) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


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

    `run_name`/`extra_tags`: for auxiliary runs (the layered variants' from-scratch baseline, a child run).
    A second process training the same run stops at once with a one-line `BusyError` naming the first one's pid:
    global rank zero holds a lock on the run's checkpoint folder (its other ranks share the folder) until the
    model, run files and MLflow artifacts are written.
    """
    name = name or variant
    ckpt_dir = checkpoint_dir(params, variant, data, CHECKPOINTS_DIR / name)
    if rank_zero_only.rank != 0:
        return _train_run(params, variant, data, out, name, ckpt_dir, run_name, extra_tags)
    with FolderLock(ckpt_dir, "training this run"):
        return _train_run(params, variant, data, out, name, ckpt_dir, run_name, extra_tags)


def _train_run(
    params: Params,
    variant: str,
    data: PreparedData,
    out: Path,
    name: str,
    ckpt_dir: Path,
    run_name: str | None,
    extra_tags: dict[str, str] | None,
) -> TrainResult:
    from aelab.training.artifacts import log_artifacts

    cfg = params.variant(variant)
    state_file = ckpt_dir / "run.json"
    # Every process takes the same decision from the same files; rank zero clears them later (`FreshStart`).
    finished = (ckpt_dir / COMPLETE_MARKER).exists()
    restart = finished or not params.train.resume
    previous = {} if restart else _read_json(state_file)
    is_zero = rank_zero_only.rank == 0
    # Only rank zero opens the tracking store: under torchrun/SLURM all ranks start together, and two processes
    # initialising one SQLite store at once fail ("table ... already exists").
    logger: Any = False
    if is_zero:
        tags = {**run_tags(name, _stage_name(name)), **(extra_tags or {})}
        logger = mlflow_logger(params.tracking, run_name or name, tags, previous.get("run_id"))

    def open_run(trainer: L.Trainer, fresh: bool) -> None:
        if not (is_zero and trainer.is_global_zero):
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if previous.get("run_id"):
            logger.experiment.update_run(logger.run_id, status="RUNNING")  # continued, not duplicated
        state_file.write_text(json.dumps({"run_id": logger.run_id}))
        logger.log_hyperparams(run_params(params, variant, trainer.world_size))
        describe_experiment(logger.experiment, logger.experiment_id)
        log_dataset(logger.experiment, logger.run_id, data, f"{params.data.source}-train")
        curves = curves_logger(ckpt_dir, fresh)
        if curves is not None:
            trainer.loggers = [*trainer.loggers, curves]
        if not fresh:
            Console(stderr=True).print(f"{name}: resuming from {ckpt_dir} (MLflow run {logger.run_id})")

    fitted = fit_module(params, variant, data, ckpt_dir, logger, restart=restart, on_trainer=open_run)
    trainer, module = fitted.trainer, fitted.module
    dm = fitted.datamodule  # ddp_spawn fits in child processes: this process's trainer never attached it
    tested = trainer.test(module, dm, verbose=False)[0]
    metrics = {k: float(v) for k, v in sorted(tested.items())}
    metrics["best_epoch"] = _checkpoint_epoch(fitted.best_path) if fitted.best_path else -1
    if fitted.best_score is not None:
        metrics["best_val_loss"] = fitted.best_score
    metrics["epochs"] = int(trainer.current_epoch)
    last = ckpt_dir / "last.ckpt"
    if metrics["epochs"] == 0 and last.exists():  # ddp_spawn trains in child processes: ask the checkpoint
        metrics["epochs"] = _checkpoint_epoch(last) + 1
    metrics["total_epochs"] = fitted.pretrain_epochs + metrics["epochs"]
    if cfg.compare_scratch and fitted.pretrain_epochs:
        parent = logger.run_id if logger else ""
        scratch = scratch_baseline(params, variant, data, out, int(metrics["total_epochs"]), parent)
        metrics.update(scratch)
        if logger:
            logger.log_metrics({k: v for k, v in scratch.items() if k.startswith("scratch/test/")})
    module = module.cpu().eval()
    if is_zero and trainer.is_global_zero:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_bundle(folder, module, data.meta)  # model.pt and the preprocessing: usable without the project
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        copy_curves(ckpt_dir, folder)
        tag_model(logger.experiment, logger.run_id, folder / MODEL_FILE)
        log_artifacts(logger.run_id, params, module, dm, folder)
        (ckpt_dir / COMPLETE_MARKER).touch()
    return TrainResult(module, metrics, logger.run_id if logger else None)


def scratch_baseline(
    params: Params, variant: str, data: PreparedData, out: Path, total_epochs: int, parent_run_id: str
) -> dict[str, float]:
    """The same network trained end to end from scratch for the same total epochs, for the pre-training comparison.

    An ordinary training run (`pretrain: false`), written to `<out>/<variant>/scratch/<variant>/`, tracked as a
    child of the variant's MLflow run named `<variant>/scratch`.
    """
    changes = {"pretrain": False, "compare_scratch": False, "max_epochs": total_epochs}
    scratch_params = params.derive(
        {"variants": {variant: changes}, "tracking": {"log_model": False}}, f"variants.{variant} (scratch baseline)"
    )
    tags = {"mlflow.parentRunId": parent_run_id, "aelab.role": "scratch_baseline"}
    scratch = train_variant(
        scratch_params, variant, data, out / variant / "scratch", run_name=f"{variant}/scratch", extra_tags=tags
    )
    return {f"scratch/{key}": value for key, value in scratch.metrics.items()}


CURVES = "dvclive"
"""DVCLive's folder (per-epoch curves as TSV, for `dvc plots`), in the checkpoint folder while training (kept when a
run is interrupted and resumed), copied into the model folder at the end."""


def curves_logger(ckpt_dir: Path, fresh: bool) -> Any:
    """DVCLive's Lightning logger beside MLflow's, for the fine-tuning fit (pre-training phases log to MLflow).

    None, with a one-line warning, in a git repository without a commit: DVCLive asks git for the current commit
    when it starts and fails there (the curves are still in MLflow).
    """
    from scmrepo.exceptions import SCMError

    from aelab.training.curves import CurvesLogger

    logger = CurvesLogger(
        run_name=None, dir=str(ckpt_dir / CURVES), resume=not fresh, save_dvc_exp=False, dvcyaml=None, report=None
    )
    try:
        logger.experiment  # noqa: B018 - DVCLive starts lazily; start it here, where a failure can be handled
        return logger
    except SCMError as err:
        Console(stderr=True).print(
            f"[yellow]training curves for dvc plots not written ({err}): commit once (`git commit`) to get them; "
            "MLflow has the curves[/yellow]"
        )
        return None


def copy_curves(ckpt_dir: Path, folder: Path) -> None:
    target = folder / CURVES
    if target.exists():
        shutil.rmtree(target)
    if (ckpt_dir / CURVES).exists():
        shutil.copytree(ckpt_dir / CURVES, target)


def _stage_name(name: str) -> str:
    return "train_tuned" if name == TUNED else f"train@{name}"
