"""The Trainer every path uses, and the one way to fit: `fit`, which turns Ctrl-C into `KeyboardInterrupt`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerStatus

from aelab.config import Params
from aelab.models.base import direct_steps_allowed
from aelab.paths import COMPLETE_MARKER


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


class StepsPerCallOptimisation(L.Callback):
    """`train.steps_per_call` > 1: the module trains each list of batches itself (`models.base.StepsPerCall`), so
    optimisation is manual, and the epoch's learning-rate schedule is stepped where Lightning steps it otherwise:
    right after the epoch's last training step, before validation and the epoch-end checkpoint. The trainer writes
    logs after every call; the module logs its step loss every `log_every_n_steps` optimiser steps."""

    def __init__(self, log_every_n_steps: int) -> None:
        self.log_every_n_steps = log_every_n_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.automatic_optimization = False
            pl_module.step_log_interval = self.log_every_n_steps
            pl_module.direct_steps = direct_steps_allowed(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 != trainer.num_training_batches:
            return
        for config in trainer.lr_scheduler_configs:
            if config.interval == "epoch" and not config.reduce_on_plateau:
                config.scheduler.step()


class WriteMetricsPerEpoch(L.Callback):
    """Has the loggers that batch their writes (`aelab.tracking.UninterruptibleMLFlowLogger`) write what the
    previous epoch logged (its training and validation metrics) when the next epoch starts, before any other
    callback runs there."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            flush = getattr(logger, "flush", None)
            if callable(flush):
                flush()


def show_progress(setting: bool | None) -> bool:
    """`train.progress_bar`, where empty means: a person is watching (stderr is a terminal and this is not CI)."""
    if setting is not None:
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


def build_trainer(
    params: Params,
    ckpt_dir: Path | None,
    logger: Any,
    max_epochs: int | None = None,
    callbacks: list[L.Callback] | None = None,
    monitor: str = "val/loss",
    **overrides: Any,
) -> L.Trainer:
    """The Trainer of every path (training, tuning, one-class models, `aelab bench`, pre-training phases with their
    own `monitor`); `ckpt_dir=None` disables checkpoints."""
    # Lightning resets its loggers to INFO on import; its hardware banners and tips are noise in a pipeline log.
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t = params.train
    callbacks = [WriteMetricsPerEpoch(), *(callbacks or [])]
    if ckpt_dir is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_last=True)
        )
    if ckpt_dir is not None and not _own_checkpoint_writer(t.strategy, t.accelerator):
        from aelab.training.checkpoints import AtomicCheckpointIO

        overrides.setdefault("plugins", [AtomicCheckpointIO()])
    log_every_n_steps = t.log_every_n_steps
    if t.steps_per_call > 1:
        callbacks.append(StepsPerCallOptimisation(t.log_every_n_steps))
        log_every_n_steps = 1  # what the module logged during a call is written at its end
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
        log_every_n_steps=log_every_n_steps,
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
        default_root_dir=ckpt_dir,
        enable_progress_bar=show_progress(t.progress_bar),
        enable_model_summary=False,
        # The DataModule shards its epoch permutation per rank itself; a DistributedSampler would shard it again.
        use_distributed_sampler=False,
    )
    options.update(overrides)
    return L.Trainer(**options)


def _own_checkpoint_writer(strategy: str, accelerator: str) -> bool:
    """Strategies that write checkpoints their own way (DeepSpeed, XLA/TPU) keep Lightning's writer."""
    return any(word in f"{strategy} {accelerator}".lower() for word in ("deepspeed", "xla", "tpu"))


def fit(trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule, **fit_kwargs: Any) -> None:
    """`trainer.fit`, with Ctrl-C surfacing as `KeyboardInterrupt` (the CLI exits 130 and says how to resume).

    Lightning shuts down gracefully on Ctrl-C, then either returns with `trainer.interrupted` set or calls
    `sys.exit(1)`; every training (pipeline, Optuna trials, one-class models, pre-training phases, the bench) goes
    through here so that none of them mistakes an interrupted fit for a finished one.
    """
    try:
        trainer.fit(module, dm, **fit_kwargs)
    except SystemExit:
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
