"""Divide the machine's cores between aelab processes that run side by side.

PyTorch and the BLAS libraries each start one thread per core by default. Several training processes on one
machine (Optuna workers, one-class models trained in parallel, `dvc exp run --queue -j N`) then run N times as
many threads as there are cores, and every matmul waits for threads that were preempted: an epoch can take
several times as long as on an idle machine. `configure(workers)` gives each process its share of the cores.

`AELAB_WORKERS=N` tells every aelab process that N of them share the machine (set it for
`dvc exp run --queue -j N`); an explicit `OMP_NUM_THREADS` always wins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from aelab.errors import ConfigError

WORKERS_ENV = "AELAB_WORKERS"


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask: a container or `taskset` may allow fewer than exist)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def workers_from_env(default: int = 1) -> int:
    """The number of aelab processes sharing the machine, from `AELAB_WORKERS` (else `default`)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return default
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ConfigError(f"{WORKERS_ENV}={text!r}: must be a whole number of processes, at least 1")
    return workers


def _omp_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    try:
        threads = int(text)
    except ValueError:
        raise ConfigError(f"OMP_NUM_THREADS={text!r}: must be a whole number of threads, at least 1") from None
    if threads < 1:
        raise ConfigError(f"OMP_NUM_THREADS={text!r}: must be a whole number of threads, at least 1")
    return threads


def threads_per_worker(workers: int) -> int:
    """`OMP_NUM_THREADS` if set, else this process's share of the cores: max(1, cores // workers)."""
    if workers < 1:
        raise ConfigError(f"workers: {workers} processes; must be at least 1")
    return _omp_threads() or max(1, available_cpus() // workers)


def configure(workers: int | None = None) -> int:
    """Set torch's intra- and inter-op threads and the BLAS pools (numpy, scikit-learn) to this process's share.

    `workers=None` reads `AELAB_WORKERS` (default 1: the whole machine). Returns the number of threads set.
    Inter-op threads can only be set before torch's first parallel work; later calls leave them as they are.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = threads_per_worker(workers_from_env() if workers is None else workers)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        with contextlib.suppress(RuntimeError):  # parallel work has started in this process: the pool is fixed
            torch.set_num_interop_threads(threads)
    threadpool_limits(limits=threads)
    return threads


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Run torch and the BLAS/OpenMP pools (scikit-learn) on at most `n` threads; None changes nothing."""
    import torch
    from threadpoolctl import threadpool_limits

    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(previous)
