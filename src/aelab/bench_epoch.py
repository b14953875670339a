"""`aelab bench --epoch`: one whole training epoch, as the pipeline runs it, against a bare loop doing the same work.

Each run trains two epochs from the same initial weights and times the second (the first pays one-time costs: the
first checkpoint folder, allocator growth, lazily built state). The Lightning path is `build_trainer` as training
calls it: validation every epoch, `ModelCheckpoint` (best and last, with optimiser state) into a temporary
folder, and the MLflow logger on a temporary SQLite store (step loss every `train.log_every_n_steps`, epoch means).
The bare loop does the same work by hand: the training epoch, a validation pass over the same batches (loss and
MSE), and `torch.save` of weights and optimiser state for the last epoch and for a new best.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from aelab.bench import BareLoop, PathResult
from aelab.bench_measure import autocast, peak_memory, synchronize
from aelab.config import Params
from aelab.data.prepared import PreparedData
from aelab.models.base import AutoencoderModule

TIMED_EPOCH = 1  # the second epoch; the first is the warm-up
_STORE: tempfile.TemporaryDirectory | None = None  # one MLflow store per process: creating one takes seconds


class _EpochTimer(L.Callback):
    """From the start of the timed epoch to the end of training (after its validation, checkpoints and logging)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.stop = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == TIMED_EPOCH:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(self.device)
        self.stop = time.perf_counter()


def _bench_logger(params: Params) -> Any:
    """The pipeline's MLflow logger, on a throw-away SQLite store (nothing reaches the project's `mlruns/`)."""
    from aelab.tracking import mlflow_logger

    global _STORE
    if _STORE is None:
        _STORE = tempfile.TemporaryDirectory(prefix="aelab-bench-mlflow-")
    uri = f"sqlite:///{Path(_STORE.name) / 'mlflow.db'}"
    cfg = params.tracking.model_copy(update={"uri": uri, "experiment": "aelab-bench"})
    return mlflow_logger(cfg, "bench-epoch", {"aelab.bench": "epoch"})


def run_lightning_epoch(
    params: Params, variant: str, data: PreparedData, module: AutoencoderModule, device: torch.device
) -> PathResult:
    from aelab.training.run import build_datamodule
    from aelab.training.trainer import build_trainer, fit

    dm = build_datamodule(params, variant, data)
    timer = _EpochTimer(device)
    logger = _bench_logger(params)
    with tempfile.TemporaryDirectory(prefix="aelab-bench-ckpt-") as folder:
        trainer = build_trainer(
            params,
            Path(folder),
            logger,
            max_epochs=TIMED_EPOCH + 1,
            callbacks=[timer],
            devices=1,
            num_nodes=1,
            strategy="auto",
        )
        fit_module = torch.compile(module) if params.train.compile else module
        with peak_memory(trainer.strategy.root_device) as memory:
            fit(trainer, fit_module, dm)  # the one fit path of training
    val_loss = trainer.callback_metrics.get("val/loss")
    steps = trainer.global_step // (TIMED_EPOCH + 1)  # optimiser steps per epoch (several per call or one)
    return PathResult(
        "lightning",
        timer.stop - timer.start,
        len(data.train.x),
        memory["peak"],
        float(val_loss) if val_loss is not None else float("nan"),
        steps,
    )


def validate(loop: BareLoop, x_val: Tensor, batch_size: int, seed: int) -> tuple[float, float]:
    """Mean loss and per-pixel MSE over the validation rows; the corruption is seeded per batch, as in training."""
    module = loop.module.eval()
    loss_sum = torch.zeros((), device=x_val.device)
    squared = torch.zeros((), device=x_val.device)
    generator = torch.Generator(device=x_val.device)
    with torch.no_grad():
        for number, start in enumerate(range(0, len(x_val), batch_size)):
            x = x_val[start : start + batch_size]
            corrupted = x
            if loop.corruption is not None:
                corrupted = loop.corruption(x, generator.manual_seed(seed * 1_000_003 + number))
            with autocast(loop.device, loop.precision):
                loss, recon, _, _ = loop.losses((corrupted, x))
            loss_sum += loss.float() * len(x)
            squared += (recon.float() - x).pow(2).sum()
    module.train()
    return float(loss_sum) / len(x_val), float(squared) / x_val.numel()


def run_bare_epoch(
    params: Params, variant: str, data: PreparedData, module: AutoencoderModule, device: torch.device
) -> PathResult:
    loop = BareLoop(params, data, module, device)
    x_val = torch.from_numpy(np.ascontiguousarray(data.val.x)).to(device)
    eval_batch = max(loop.batch_size, 1024)  # the datamodule's evaluation batch
    best, val_loss, start, steps = float("inf"), float("nan"), 0.0, 0
    with tempfile.TemporaryDirectory(prefix="aelab-bench-ckpt-") as folder, peak_memory(device) as memory:
        for epoch in range(TIMED_EPOCH + 1):
            if epoch == TIMED_EPOCH:
                synchronize(device)
                start = time.perf_counter()
            running, steps = torch.zeros((), device=device), 0
            for x in loop.epoch_batches():
                running += loop.step(x).detach() * len(x)
                steps += 1
            train_loss = float(running) / len(loop.x)  # the epoch mean a logger would record
            val_loss, _ = validate(loop, x_val, eval_batch, params.seed)
            state = {
                "epoch": epoch,
                "state_dict": loop.module.state_dict(),
                "optimizer": loop.optimizer.state_dict(),
                "train_loss": train_loss,
            }
            torch.save(state, Path(folder) / "last.pt")
            if val_loss < best:
                best = val_loss
                torch.save(state, Path(folder) / "best.pt")
        synchronize(device)
        stop = time.perf_counter()
    return PathResult("bare", stop - start, len(loop.x), memory["peak"], val_loss, steps)
