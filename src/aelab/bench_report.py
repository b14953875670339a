"""What `aelab bench` prints: one table per measured layout, and with `--suite` a summary of the four ratios.

The suite's layouts are the ones speed is judged on: Hinton and Salakhutdinov's 784-1000-500-250-30 at batch 128
and 256, a small 784-256-32 at batch 256, and what a user gets by default (the params file's network and batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from aelab.bench import BenchOptions, BenchResult, bench_data, run_bench, spread
from aelab.bench_measure import SGEMM_SIZE
from aelab.config import Params, apply_overrides


@dataclass(frozen=True)
class Layout:
    """Encoder widths and batch size to bench; None keeps the params file's value."""

    hidden_dims: tuple[int, ...] | None
    batch_size: int | None

    def apply(self, params: Params, variant: str) -> Params:
        overrides = []
        if self.hidden_dims is not None:
            overrides.append(f"variants.{variant}.hidden_dims=[{', '.join(map(str, self.hidden_dims))}]")
        if self.batch_size is not None:
            overrides.append(f"train.batch_size={self.batch_size}")
        if not overrides:
            return params
        return params.derive(apply_overrides({}, overrides), "bench --suite")


SUITE = (
    Layout((1000, 500, 250, 30), 128),
    Layout((1000, 500, 250, 30), 256),
    Layout((256, 32), 256),
    Layout(None, None),  # the default: params file network and batch size
)
MODES = ("steps", "epoch")


def _dims(result: BenchResult) -> str:
    return "-".join(str(d) for d in [result.n_features, *result.hidden_dims])


def _per_unit(result: BenchResult, seconds: float, steps: int) -> str:
    """ms per step in steps mode, seconds per epoch in epoch mode."""
    return f"{1000 * seconds / steps:.3f} ms/step" if result.mode == "steps" else f"{seconds:.2f} s/epoch"


def ratio_line(result: BenchResult) -> str:
    ratios = result.pair_ratios
    return (
        f"time per sample, lightning / bare: {result.ratio:.3f} (median of {len(ratios)} interleaved pairs; "
        f"pairs {min(ratios):.3f}-{max(ratios):.3f}, spread {100 * spread(ratios):.1f}%; "
        f"fastest runs {result.fastest_ratio:.3f})"
    )


def flops_line(result: BenchResult) -> str:
    """The share of the measured sgemm throughput that the bare loop's training step reaches."""
    rate = result.step_rate(result.bare)
    text = f"{_dims(result)} step: {rate / 1e9:,.1f} GFLOP/s"
    if result.machine_flops:
        text += f" = {100 * rate / result.machine_flops:.0f}% of sgemm ({SGEMM_SIZE}x{SGEMM_SIZE} fp32: "
        text += f"{result.machine_flops / 1e9:,.1f} GFLOP/s)"
    if result.shapes_flops:
        text += f"; the step's matmuls alone: {result.shapes_flops / 1e9:,.1f} GFLOP/s"
    return text


def report(result: BenchResult, console: Console) -> None:
    mode = "one epoch with validation, checkpoints, logging" if result.mode == "epoch" else "training steps"
    table = Table(
        title=f"aelab bench: {_dims(result)} {result.variant} autoencoder, batch {result.batch_size}, "
        f"{result.device}, precision {result.precision}, {mode}"
    )
    loss = "final val loss" if result.mode == "epoch" else "final loss"
    columns = ("path", "samples/s", "time (median)", "run spread", "peak memory (MiB)", loss, "matmul utilisation")
    for column in columns:
        table.add_column(column, justify="right" if column != "path" else "left")
    for runs in (result.bare_runs, result.lightning_runs):
        path = result.bare if runs is result.bare_runs else result.lightning
        util = result.utilisation(path)
        table.add_row(
            path.name,
            f"{path.samples_per_s:,.0f}",
            _per_unit(result, path.seconds, path.steps),
            f"{100 * spread([r.seconds for r in runs]):.1f}%",
            f"{max(r.peak_memory for r in runs) / 2**20:,.1f}",
            f"{path.final_loss:.5f}",
            f"{100 * util:.1f}%" if util is not None else "n/a",
        )
    console.print(table)
    memory_kind = "CUDA max allocated" if result.device.startswith("cuda") else "process RSS"
    console.print(f"step FLOPs (matmul, forward+backward): {result.step_flops:,}; peak memory: {memory_kind}")
    if result.machine_flops:
        console.print(
            f"machine sgemm throughput ({SGEMM_SIZE}x{SGEMM_SIZE}, best of 10): "
            f"{result.machine_flops / 1e9:,.1f} GFLOP/s"
        )
    console.print(flops_line(result))
    console.print(ratio_line(result))


def summary(results: Sequence[BenchResult], console: Console) -> None:
    """The suite's ratios in one table (the bench's answer to "how far is Lightning from a bare loop")."""
    table = Table(title="aelab bench --suite: Lightning / bare, time per sample (median of interleaved pairs)")
    for column in ("layout", "batch", "mode", "bare", "lightning", "ratio", "pair range", "pairs", "sgemm share"):
        table.add_column(column, justify="left" if column in ("layout", "mode") else "right")
    for result in results:
        ratios = result.pair_ratios
        util = result.utilisation(result.bare)
        table.add_row(
            _dims(result),
            str(result.batch_size),
            result.mode,
            _per_unit(result, result.bare.seconds, result.bare.steps),
            _per_unit(result, result.lightning.seconds, result.lightning.steps),
            f"{result.ratio:.3f}",
            f"{min(ratios):.3f}-{max(ratios):.3f}",
            str(len(ratios)),
            f"{100 * util:.0f}%" if util is not None else "n/a",
        )
    console.print(table)


def run_suite(
    params: Params,
    options: BenchOptions,
    modes: Sequence[str] = ("steps",),
    layouts: Sequence[Layout] = SUITE,
    progress: Callable[[str], None] = lambda _: None,
    console: Console | None = None,
) -> list[BenchResult]:
    """Every layout in every mode, on one copy of the data; each result is printed as soon as it is measured."""
    data = bench_data(options, params.seed)
    results = []
    for layout in layouts:
        layout_params = layout.apply(params, options.variant)
        for mode in modes:
            mode_options = BenchOptions(**{**options.__dict__, "epoch": mode == "epoch"})
            label = f"{layout.hidden_dims or 'default'} batch {layout_params.train.batch_size} {mode}"
            result = run_bench(layout_params, mode_options, lambda msg, lab=label: progress(f"{lab}: {msg}"), data)
            if console is not None:
                report(result, console)
            results.append(result)
    return results


def main(
    params: Params,
    options: BenchOptions,
    suite: bool = False,
    modes: Sequence[str] | None = None,
    profile: bool = False,
) -> None:
    """`aelab bench`: one layout (the params file's), or with `suite` the four layouts, then the summary;
    `profile`: then a cProfile of the Lightning steps (with `suite`, of the small 784-256-32 layout)."""
    from aelab import threads

    threads_set = threads.configure()
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: one line per figure, tables unwrapped
        console = Console(width=160, soft_wrap=True)
    stderr = Console(stderr=True)
    omp = os.environ.get("OMP_NUM_THREADS")
    console.print(
        f"torch threads: {threads_set} ({threads.available_cpus()} cores, {threads.WORKERS_ENV}="
        f"{os.environ.get(threads.WORKERS_ENV, 'unset')}, OMP_NUM_THREADS={omp or 'unset'}); "
        f"{options.repeats} interleaved repeats per path; train.steps_per_call={params.train.steps_per_call} "
        "(optimiser steps per Lightning step; the bare loop takes one batch at a time)"
    )
    modes = tuple(modes or (("epoch",) if options.epoch else ("steps",)))

    def progress(msg: str) -> None:
        stderr.print(f"[dim]{msg}[/dim]")

    layouts = SUITE if suite else (Layout(None, None),)
    results = run_suite(params, options, modes, layouts, progress=progress, console=console)
    if suite:
        summary(results, console)
    if profile:
        from aelab.bench_profile import profile_lightning

        profiled = SUITE[2].apply(params, options.variant) if suite else params
        profile_lightning(profiled, BenchOptions(**{**options.__dict__, "epoch": False}), console)
