"""CPU threads for torch: one rule for serve, worker, evaluate, predict and train.

Several processes that each take every core slow each other down badly (on a busy 2-core machine
2 intra-op threads ran at 1-2 s per object against 173 ms with 1 thread), so the default is the
CPUs this process may use divided by the processes the command starts.
"""

from __future__ import annotations

import os

from .errors import InputError


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(requested: int | None = None, processes: int = 1) -> int:
    """``requested`` if given (>= 1), else ``available_cpus() // processes`` (at least 1)."""
    if requested is not None and requested != 0:
        if requested < 0:
            raise InputError(f"threads must be 1 or more, got {requested}")
        return int(requested)
    return max(1, available_cpus() // max(1, int(processes)))


def configure_threads(requested: int | None = None, processes: int = 1) -> int:
    """Set torch's intra-op threads (and inter-op, which only matters on the CPU) and return the count."""
    import torch

    n = thread_count(requested, processes)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(max(1, min(n, 2)))
    except RuntimeError:  # only settable before the first parallel work; later calls keep the old value
        pass
    return n
