"""`aelab bench`: the Lightning training path against a hand-written PyTorch loop, in one process.

Both paths train the configured variant (same initial weights, data, batch size, optimiser, precision, device)
for the same number of steps after the same number of warm-up steps; only the timed steps count. The Lightning
path is the real one (`build_datamodule`, the variant's LightningModule, `build_trainer`), without validation,
checkpoints or a logger, so what is measured is the per-step cost of the framework and of the module's metrics.
The paths alternate `repeats` times and the fastest of each is kept (the least disturbed by other processes).
On CPU the matmul FLOPs of one training step (counted with `torch.utils.flop_counter`) are compared with the
machine's sgemm throughput measured in the same run.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

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
    repeats: int = 3
    data: str = "synthetic"
    data_path: str | None = None
    samples: int = 60_000
    features: int = 784


@dataclass
class PathResult:
    name: str
    seconds: float
    samples: int
    peak_memory: int
    final_loss: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


@dataclass
class BenchResult:
    lightning: PathResult
    bare: PathResult
    device: str
    precision: str
    batch_size: int
    hidden_dims: list[int]
    n_features: int
    step_flops: int
    machine_flops: float | None
    variant: str = "undercomplete"

    @property
    def ratio(self) -> float:
        """Time per sample of the Lightning path over that of the bare loop (1.0 = no overhead)."""
        return self.bare.samples_per_s / self.lightning.samples_per_s

    def utilisation(self, path: PathResult) -> float | None:
        if not self.machine_flops:
            return None
        steps = path.samples / self.batch_size
        return self.step_flops * steps / path.seconds / self.machine_flops


# ---- data -----------------------------------------------------------------------------------------------------
def bench_data(options: BenchOptions, seed: int) -> PreparedData:
    """The rows to train on: MNIST-sized random data, a real dataset scaled to [0, 1], or `data/prepared`."""
    if options.data not in DATA_KINDS:
        raise ConfigError(f"bench --data: {options.data!r} is not one of {', '.join(DATA_KINDS)}")
    if options.data == "prepared":
        from aelab.data.prepared import load_prepared

        return load_prepared(Path(options.data_path) if options.data_path else PREPARED_DIR)
    if options.data == "synthetic":
        rng = np.random.default_rng(seed)
        x = rng.random((options.samples, options.features), dtype=np.float32)
        side = math.isqrt(options.features)  # square random "images", so the conv variants can be benched too
        image_shape = [1, side, side] if side * side == options.features else None
    else:
        from aelab.data.sources import load_source

        raw = load_source(DataConfig(source=options.data, path=options.data_path))
        x = raw.x.astype(np.float32)
        x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
        image_shape = list(raw.image_shape) if raw.image_shape else None
    small = Split(x[:1024], None)
    meta = {"source": options.data, "image_shape": image_shape}
    return PreparedData(train=Split(x, None), val=small, test=small, meta=meta)


# ---- measuring helpers ----------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakRss:
    """Samples the process's resident memory every 5 ms (CPU peak memory; CUDA uses the allocator's counter)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[dict[str, int]]:
    out = {"peak": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak"] = torch.cuda.max_memory_allocated(device)
    else:
        with _PeakRss() as sampler:
            yield out
        out["peak"] = sampler.peak


def machine_matmul_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large float32 matmul on `device`: the best of `repeats` (the machine's practical peak)."""
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


# ---- the two paths --------------------------------------------------------------------------------------------
class _StepTimer(L.Callback):
    """Starts the clock after the last warm-up step and stops it after the last timed step."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.stop = 0.0
        self.loss = float("nan")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch, idx) -> None:
        if trainer.global_step == self.warmup:
            _synchronize(self.device)
            self.start = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps:
            _synchronize(self.device)
            self.stop = time.perf_counter()
            self.loss = float(outputs["loss"]) if isinstance(outputs, dict) and "loss" in outputs else float("nan")


def run_lightning(
    params: Params, variant: str, data: PreparedData, module: AutoencoderModule, options: BenchOptions
) -> PathResult:
    from aelab.training.run import build_datamodule
    from aelab.training.trainer import build_trainer

    dm = build_datamodule(params, variant, data)
    timer = _StepTimer(options.warmup, options.steps, torch.device("cpu"))
    trainer = build_trainer(
        params,
        None,
        logger=False,
        max_epochs=10_000,
        callbacks=[timer],
        max_steps=options.warmup + options.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accumulate_grad_batches=1,
        devices=1,
        num_nodes=1,
        strategy="auto",
    )
    timer.device = trainer.strategy.root_device
    fit_module = torch.compile(module) if params.train.compile else module
    with _peak_memory(trainer.strategy.root_device) as memory:
        trainer.fit(fit_module, dm)
    return PathResult(
        "lightning", timer.stop - timer.start, options.steps * params.train.batch_size, memory["peak"], timer.loss
    )


def run_bare(
    params: Params, data: PreparedData, module: AutoencoderModule, device: torch.device, options: BenchOptions
) -> PathResult:
    """The hand-written loop: resident data, a permutation per epoch, index batches, the same loss and optimiser."""
    from aelab.training.run import build_datamodule

    corruption = build_datamodule(params, module.variant, data).corruption
    precision = params.train.precision
    module = module.to(device).train()
    optimizer = module.configure_optimizers()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    x_all = torch.from_numpy(np.ascontiguousarray(data.train.x)).to(device)
    batch, n = params.train.batch_size, len(x_all)
    per_epoch = n // batch
    generator = torch.Generator(device=device).manual_seed(params.seed)
    step_fn = torch.compile(module._losses) if params.train.compile else module._losses

    def step(x: torch.Tensor) -> torch.Tensor:
        corrupted = corruption(x, generator) if corruption is not None else x
        with _autocast(device, precision):
            loss = step_fn((corrupted, x))[0]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    total = options.warmup + options.steps
    start = 0.0
    loss = torch.zeros(())
    with _peak_memory(device) as memory:
        done = 0
        while done < total:
            order = torch.randperm(n, device=device, generator=generator)
            for i in range(min(per_epoch + (n % batch > 0), total - done)):
                loss = step(x_all[order[i * batch : (i + 1) * batch]])
                done += 1
                if done == options.warmup:
                    _synchronize(device)
                    start = time.perf_counter()
        _synchronize(device)
        stop = time.perf_counter()
    return PathResult("bare", stop - start, options.steps * batch, memory["peak"], float(loss.detach()))


def step_flops(module: AutoencoderModule, batch: torch.Tensor) -> int:
    """Matmul FLOPs of one training step (forward and backward), counted by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(module).cpu().train()
    counter = FlopCounterMode(display=False)
    with counter:
        probe._losses((batch, batch))[0].backward()
    return int(counter.get_total_flops())


def run_bench(params: Params, options: BenchOptions, progress: Callable[[str], None] = lambda _: None) -> BenchResult:
    t = params.train
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: bench supports {', '.join(PRECISIONS)} (got {t.precision!r})")
    if options.steps < 1 or options.warmup < 1 or options.repeats < 1:
        raise ConfigError("bench: --steps, --warmup and --repeats must be at least 1")
    L.seed_everything(params.seed, verbose=False)
    data = bench_data(options, params.seed)
    initial = build_module(params, options.variant, data.n_features, data.image_shape)
    accelerator = t.accelerator if t.accelerator != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if accelerator in ("cuda", "gpu") else accelerator)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.accelerator: cuda requested but no CUDA device is available")
    best: dict[str, PathResult] = {}
    for repeat in range(options.repeats):
        for name in ("bare", "lightning"):
            progress(f"repeat {repeat + 1}/{options.repeats}: {name}")
            module = copy.deepcopy(initial)
            if name == "bare":
                result = run_bare(params, data, module, device, options)
            else:
                result = run_lightning(params, options.variant, data, module, options)
            if name not in best or result.seconds < best[name].seconds:
                best[name] = result
    flops = step_flops(initial, torch.from_numpy(data.train.x[: t.batch_size]))
    machine = machine_matmul_flops(device) if device.type == "cpu" else None
    return BenchResult(
        lightning=best["lightning"],
        bare=best["bare"],
        device=str(device),
        precision=t.precision,
        batch_size=t.batch_size,
        hidden_dims=list(params.variant(options.variant).hidden_dims),
        n_features=data.n_features,
        step_flops=flops,
        machine_flops=machine,
        variant=options.variant,
    )


def report(result: BenchResult, console: Console) -> None:
    dims = "-".join(str(d) for d in [result.n_features, *result.hidden_dims])
    table = Table(
        title=f"aelab bench: {dims} {result.variant} autoencoder, batch {result.batch_size}, {result.device}, "
        f"precision {result.precision}"
    )
    for column in ("path", "samples/s", "ms/step", "peak memory (MiB)", "final loss", "matmul utilisation"):
        table.add_column(column, justify="right" if column != "path" else "left")
    memory_kind = "CUDA max allocated" if result.device.startswith("cuda") else "process RSS"
    for path in (result.bare, result.lightning):
        steps = path.samples / result.batch_size
        util = result.utilisation(path)
        table.add_row(
            path.name,
            f"{path.samples_per_s:,.0f}",
            f"{1000 * path.seconds / steps:.3f}",
            f"{path.peak_memory / 2**20:,.1f}",
            f"{path.final_loss:.5f}",
            f"{100 * util:.1f}%" if util is not None else "n/a",
        )
    console.print(table)
    console.print(f"step FLOPs (matmul, forward+backward): {result.step_flops:,}")
    if result.machine_flops:
        console.print(f"machine sgemm throughput (2048x2048, best of 5): {result.machine_flops / 1e9:,.1f} GFLOP/s")
    console.print(f"peak memory: {memory_kind}")
    console.print(f"time per sample, lightning / bare: {result.ratio:.3f}")


def main(params: Params, options: BenchOptions) -> BenchResult:
    console = Console()
    result = run_bench(params, options, progress=lambda msg: Console(stderr=True).print(f"[dim]{msg}[/dim]"))
    report(result, console)
    return result
