"""`aelab bench`: the Lightning training path against a hand-written PyTorch loop, in one process.

Both paths train the configured variant (same initial weights, data, batch size, optimiser, precision, device).
Two modes:
- steps (default): a number of timed training steps after untimed warm-up steps. The Lightning path is the real
  one (`build_datamodule`, the variant's LightningModule, `build_trainer`) without validation, checkpoints or a
  logger, so what is measured is the per-step cost of the framework and of the module's metrics.
- epoch (`--epoch`): one whole epoch after an untimed warm-up epoch, with validation, checkpoints and an MLflow
  logger as the pipeline configures them, against a bare loop doing the same work (training epoch, validation
  pass, `torch.save` of the weights and optimiser state). See `aelab.bench_epoch`.
Timings drift on a busy machine, so the paths run in `repeats` adjacent pairs, the first path of a pair
alternating (bare then lightning, lightning then bare, ...) so that neither always runs second, and the ratio is
the median of the pairs' ratios; the range of those pair ratios is its spread.
The matmul FLOPs of one training step (counted with `torch.utils.flop_counter`) are compared with the sgemm
throughput measured in the same run, on a square 1024 x 1024 product and on the step's own matmul shapes.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from aelab.bench_measure import (
    autocast,
    machine_matmul_flops,
    peak_memory,
    shapes_matmul_flops,
    step_flops,
    synchronize,
)
from aelab.config import DataConfig, Params
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError
from aelab.models import build_module
from aelab.models.base import AutoencoderModule
from aelab.paths import PREPARED_DIR

DATA_KINDS = ("synthetic", "digits", "mnist", "fashion-mnist", "prepared")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class BenchOptions:
    variant: str = "undercomplete"
    steps: int = 300
    warmup: int = 30
    repeats: int = 9
    data: str = "synthetic"
    data_path: str | None = None
    samples: int = 60_000
    features: int = 784
    epoch: bool = False


@dataclass
class PathResult:
    name: str
    seconds: float
    samples: int
    peak_memory: int
    final_loss: float
    steps: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


@dataclass
class BenchResult:
    """Every interleaved run of both paths (`lightning_runs[i]` and `bare_runs[i]` ran one right after the other)."""

    lightning_runs: list[PathResult]
    bare_runs: list[PathResult]
    device: str
    precision: str
    batch_size: int
    hidden_dims: list[int]
    n_features: int
    step_flops: int
    machine_flops: float | None
    variant: str = "undercomplete"
    mode: str = "steps"
    shapes_flops: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pair_ratios(self) -> list[float]:
        """Time per sample of Lightning over bare, per adjacent pair (drift between pairs cancels out)."""
        return [
            (lit.seconds / lit.samples) / (bare.seconds / bare.samples)
            for lit, bare in zip(self.lightning_runs, self.bare_runs, strict=True)
        ]

    @property
    def ratio(self) -> float:
        """The median pair ratio (1.0 = no overhead)."""
        return float(statistics.median(self.pair_ratios))

    @property
    def fastest_ratio(self) -> float:
        """The ratio of each path's fastest run (the least disturbed), as a cross-check of `ratio`."""
        return (_fastest(self.lightning_runs).seconds / self.lightning_runs[0].samples) / (
            _fastest(self.bare_runs).seconds / self.bare_runs[0].samples
        )

    @property
    def lightning(self) -> PathResult:
        return _median_run(self.lightning_runs)

    @property
    def bare(self) -> PathResult:
        return _median_run(self.bare_runs)

    def step_rate(self, path: PathResult) -> float:
        """Matmul FLOP/s of the training steps of `path` (in epoch mode: over the whole epoch)."""
        return self.step_flops * path.steps / path.seconds

    def utilisation(self, path: PathResult) -> float | None:
        return self.step_rate(path) / self.machine_flops if self.machine_flops else None


def spread(values: list[float]) -> float:
    """(max - min) / median: 0.03 means the runs lie within 3 % of each other."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else float("nan")


def _fastest(runs: list[PathResult]) -> PathResult:
    return min(runs, key=lambda run: run.seconds)


def _median_run(runs: list[PathResult]) -> PathResult:
    return sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]


# ---- data -----------------------------------------------------------------------------------------------------
def bench_data(options: BenchOptions, seed: int) -> PreparedData:
    """The rows to train on: MNIST-sized random data, a real dataset scaled to [0, 1], or `data/prepared`.

    Synthetic and raw datasets get a validation split of one tenth of the training rows' count (drawn apart
    from them for synthetic data, the last tenth otherwise), as the published MNIST protocol holds out.
    """
    if options.data not in DATA_KINDS:
        raise ConfigError(f"bench --data: {options.data!r} is not one of {', '.join(DATA_KINDS)}")
    if options.data == "prepared":
        from aelab.data.prepared import load_prepared

        return load_prepared(Path(options.data_path) if options.data_path else PREPARED_DIR)
    if options.samples < 2 or options.features < 2:
        raise ConfigError("bench: --samples and --features must be at least 2")
    if options.data == "synthetic":
        rng = np.random.default_rng(seed)
        x = rng.random((options.samples + max(1, options.samples // 10), options.features), dtype=np.float32)
        train, val = x[: options.samples], x[options.samples :]
        side = math.isqrt(options.features)  # square random "images", so the conv variants can be benched too
        image_shape = [1, side, side] if side * side == options.features else None
    else:
        from aelab.data.sources import load_source

        raw = load_source(DataConfig(source=options.data, path=options.data_path))
        x = raw.x.astype(np.float32)
        x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
        n_val = max(1, len(x) // 10)
        train, val = x[:-n_val], x[-n_val:]
        image_shape = list(raw.image_shape) if raw.image_shape else None
    meta = {"source": options.data, "image_shape": image_shape}
    return PreparedData(train=Split(train, None), val=Split(val, None), test=Split(val, None), meta=meta)


# ---- the bare loop --------------------------------------------------------------------------------------------
class BareLoop:
    """The hand-written loop: resident data, a permutation per epoch, index batches, the same loss and optimiser."""

    def __init__(self, params: Params, data: PreparedData, module: AutoencoderModule, device: torch.device) -> None:
        from aelab.training.run import build_datamodule

        self.corruption = build_datamodule(params, module.variant, data).corruption
        self.precision, self.device = params.train.precision, device
        self.module = module.to(device).train()
        optimizer = module.configure_optimizers()
        self.optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "16-mixed")
        self.x = torch.from_numpy(np.ascontiguousarray(data.train.x)).to(device)
        self.batch_size = params.train.batch_size
        self.generator = torch.Generator(device=device).manual_seed(params.seed)
        self.losses = torch.compile(module._losses) if params.train.compile else module._losses

    def step(self, x: Tensor) -> Tensor:
        corrupted = self.corruption(x, self.generator) if self.corruption is not None else x
        with autocast(self.device, self.precision):
            loss = self.losses((corrupted, x))[0]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def epoch_batches(self) -> Iterator[Tensor]:
        order = torch.randperm(len(self.x), device=self.device, generator=self.generator)
        for start in range(0, len(self.x), self.batch_size):
            yield self.x[order[start : start + self.batch_size]]


# ---- steps mode -----------------------------------------------------------------------------------------------
class StepTimer(L.Callback):
    """Starts the clock after the last warm-up step and stops it after the last timed step.

    With `train.steps_per_call` a Lightning step takes several optimiser steps: the clock starts at the first call
    that ends at or past the warm-up and stops at the first that ends at or past the timed steps; `timed_steps` is
    how many optimiser steps lie between (the timed steps rounded up to whole calls)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.stop = 0.0
        self.start_step = self.timed_steps = 0
        self.loss = float("nan")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch, idx) -> None:
        step = trainer.global_step
        if not self.start and step >= self.warmup:
            synchronize(self.device)
            self.start, self.start_step = time.perf_counter(), step
        elif self.start and not self.stop and step >= self.start_step + self.steps:
            synchronize(self.device)
            self.stop, self.timed_steps = time.perf_counter(), step - self.start_step
            loss = outputs["loss"] if isinstance(outputs, dict) and "loss" in outputs else outputs
            self.loss = float(loss) if isinstance(loss, torch.Tensor) else float("nan")


def run_lightning(
    params: Params,
    variant: str,
    data: PreparedData,
    module: AutoencoderModule,
    options: BenchOptions,
    timer: StepTimer | None = None,
) -> PathResult:
    """`timer`: a `StepTimer` subclass that does more at the same points (the profile of `--profile`)."""
    from aelab.training.run import build_datamodule
    from aelab.training.trainer import build_trainer, fit

    dm = build_datamodule(params, variant, data)
    timer = timer or StepTimer(options.warmup, options.steps, torch.device("cpu"))
    trainer = build_trainer(
        params,
        None,
        logger=False,
        max_epochs=10_000,
        callbacks=[timer],
        max_steps=options.warmup + options.steps + 2 * params.train.steps_per_call,  # whole calls past both marks
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=1,
        devices=1,
        num_nodes=1,
        strategy="auto",
    )
    timer.device = trainer.strategy.root_device
    fit_module = torch.compile(module) if params.train.compile else module
    with peak_memory(trainer.strategy.root_device) as memory:
        fit(trainer, fit_module, dm)  # the one fit path of training
    samples = timer.timed_steps * params.train.batch_size
    return PathResult("lightning", timer.stop - timer.start, samples, memory["peak"], timer.loss, timer.timed_steps)


def run_bare(
    params: Params, data: PreparedData, module: AutoencoderModule, device: torch.device, options: BenchOptions
) -> PathResult:
    loop = BareLoop(params, data, module, device)
    total = options.warmup + options.steps
    start = 0.0
    loss = torch.zeros(())
    with peak_memory(device) as memory:
        done = 0
        while done < total:
            for x in loop.epoch_batches():
                loss = loop.step(x)
                done += 1
                if done == options.warmup:
                    synchronize(device)
                    start = time.perf_counter()
                if done == total:
                    break
        synchronize(device)
        stop = time.perf_counter()
    samples = options.steps * loop.batch_size
    return PathResult("bare", stop - start, samples, memory["peak"], float(loss.detach()), options.steps)


# ---- both paths, interleaved ----------------------------------------------------------------------------------
def bench_device(params: Params) -> torch.device:
    t = params.train
    accelerator = t.accelerator if t.accelerator != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if accelerator in ("cuda", "gpu") else accelerator)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.accelerator: cuda requested but no CUDA device is available")
    return device


def run_bench(
    params: Params,
    options: BenchOptions,
    progress: Callable[[str], None] = lambda _: None,
    data: PreparedData | None = None,
) -> BenchResult:
    """Both paths `options.repeats` times, alternating; `data` (from `bench_data`) may be shared between calls."""
    from aelab.bench_epoch import run_bare_epoch, run_lightning_epoch

    t = params.train
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: bench supports {', '.join(PRECISIONS)} (got {t.precision!r})")
    if options.steps < 1 or options.warmup < 1 or options.repeats < 1:
        raise ConfigError("bench: --steps, --warmup and --repeats must be at least 1")
    L.seed_everything(params.seed, verbose=False)
    # What `build_trainer(deterministic=True)` selects, set before the first (bare) run so that both paths use it.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    data = data if data is not None else bench_data(options, params.seed)
    initial = build_module(params, options.variant, data.n_features, data.image_shape)
    device = bench_device(params)
    runs: dict[str, list[PathResult]] = {"bare": [], "lightning": []}
    for repeat in range(options.repeats):
        for name in ("bare", "lightning") if repeat % 2 == 0 else ("lightning", "bare"):
            progress(f"repeat {repeat + 1}/{options.repeats}: {name}")
            module = copy.deepcopy(initial)
            if options.epoch:
                run = run_bare_epoch if name == "bare" else run_lightning_epoch
                result = run(params, options.variant, data, module, device)
            elif name == "bare":
                result = run_bare(params, data, module, device, options)
            else:
                result = run_lightning(params, options.variant, data, module, options)
            runs[name].append(result)
    flops = step_flops(initial, torch.from_numpy(data.train.x[: t.batch_size]))
    return BenchResult(
        lightning_runs=runs["lightning"],
        bare_runs=runs["bare"],
        device=str(device),
        precision=t.precision,
        batch_size=t.batch_size,
        hidden_dims=list(getattr(params.variant(options.variant), "hidden_dims", None) or [initial.code_dim]),
        n_features=data.n_features,
        step_flops=flops,
        machine_flops=machine_matmul_flops(device),
        variant=options.variant,
        mode="epoch" if options.epoch else "steps",
        shapes_flops=shapes_matmul_flops(initial, t.batch_size, device),
    )


def main(
    params: Params,
    options: BenchOptions,
    suite: bool = False,
    modes: tuple[str, ...] | None = None,
    profile: bool = False,
) -> None:
    """`aelab bench` (printing lives in `aelab.bench_report`)."""
    from aelab import bench_report

    bench_report.main(params, options, suite, modes, profile)
