"""`aelab bench --profile`: cProfile of the Lightning path's timed steps, to see where per-step time goes.

Only the timed steps are profiled (after the warm-up, as the bench times them). cProfile slows Python code more
than the matmul kernels, so the shares overstate the framework; they show which calls to look at, not their
exact cost. Compare `per step (profiled)` with the bare loop's ms/step of the same run.
"""

from __future__ import annotations

import copy
import cProfile
import io
import pstats
import re
from typing import Any

import lightning as L
import torch
from rich.console import Console

from aelab.bench import BenchOptions, StepTimer, bench_data, run_lightning
from aelab.config import Params
from aelab.models import build_module


class _ProfiledSteps(StepTimer):
    def __init__(self, warmup: int, steps: int, profiler: cProfile.Profile) -> None:
        super().__init__(warmup, steps, torch.device("cpu"))
        self.profiler = profiler

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch, idx) -> None:
        started = bool(self.start)
        if started and not self.stop and trainer.global_step >= self.start_step + self.steps:
            self.profiler.disable()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)
        if not started and self.start:
            self.profiler.enable()


def profile_lightning(params: Params, options: BenchOptions, console: Console, top: int = 25) -> None:
    """Print the `top` functions by own time over the Lightning path's timed steps."""
    data = bench_data(options, params.seed)
    module = build_module(params, options.variant, data.n_features, data.image_shape)
    profiler = cProfile.Profile()
    timer = _ProfiledSteps(options.warmup, options.steps, profiler)
    result = run_lightning(params, options.variant, data, copy.deepcopy(module), options, timer)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    text = re.sub(r"/\S*/site-packages/", "", stream.getvalue())  # library paths relative to site-packages
    text = re.sub(r"/\S*/src/aelab/", "aelab/", text)
    console.print(
        f"cProfile of {result.steps} training steps (up to {params.train.steps_per_call} per Lightning step): "
        f"{1000 * result.seconds / result.steps:.3f} ms per step "
        "(profiled; cProfile inflates Python overhead)"
    )
    console.print(text.strip(), markup=False, highlight=False)
