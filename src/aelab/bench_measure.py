"""Measuring for `aelab bench`: peak memory, matmul FLOPs of a step, and the machine's sgemm throughput."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from aelab.models.base import AutoencoderModule

SGEMM_SIZE = 1024


def synchronize(device: torch.device) -> None:
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
def peak_memory(device: torch.device) -> Iterator[dict[str, int]]:
    out = {"peak": 0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak"] = torch.cuda.max_memory_allocated(device)
    else:
        with _PeakRss() as sampler:
            yield out
        out["peak"] = sampler.peak


def _best_seconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms caches and thread pools
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def machine_matmul_flops(device: torch.device, n: int = SGEMM_SIZE, repeats: int = 10) -> float:
    """FLOP/s of an n x n float32 matmul on `device`: the best of `repeats` (the machine's practical sgemm peak)."""
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), device, repeats)


def shapes_matmul_flops(module: nn.Module, batch: int, device: torch.device, repeats: int = 10) -> float | None:
    """FLOP/s of the step's own matmuls run alone (forward, input gradient, weight gradient of each Linear).

    The ceiling for these shapes: what the step reaches below it is framework, element-wise and optimiser time.
    None for networks without Linear layers.
    """
    shapes = [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]
    if not shapes:
        return None
    operands = [
        (torch.rand(batch, i, device=device), torch.rand(o, i, device=device), torch.rand(batch, o, device=device))
        for i, o in shapes
    ]

    def work() -> None:
        for x, w, g in operands:
            torch.mm(x, w.t()), torch.mm(g, w), torch.mm(g.t(), x)

    return sum(6 * batch * i * o for i, o in shapes) / _best_seconds(work, device, repeats)


def step_flops(module: AutoencoderModule, batch: Tensor) -> int:
    """Matmul FLOPs of one training step (forward and backward), counted by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(module).cpu().train()
    counter = FlopCounterMode(display=False)
    with counter:
        probe._losses((batch, batch))[0].backward()
    return int(counter.get_total_flops())


def autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()
