"""Timing helpers shared by the benchmarks: pinned BLAS threads, warm-up, medians, memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any


@contextmanager
def pinned_threads(n: int = 2):
    """Limit BLAS/OpenMP (and torch, if loaded) to ``n`` threads inside the block."""
    import sys

    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def median_time(
    func: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, long_run: float = 2.0
) -> tuple[float, Any]:
    """Run ``func`` ``warmup`` times, then ``repeats`` times; return (median seconds, output).

    A warm-up run that takes longer than ``long_run`` seconds is used as the only measurement:
    warm-up removes first-call overheads (imports, allocation, caches), which a run that long
    does not notice, and repeating it would double the benchmark's time.
    """
    output = None
    for _ in range(warmup):
        start = time.perf_counter()
        output = func()
        elapsed = time.perf_counter() - start
        if elapsed > long_run:
            return elapsed, output
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        output = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def peak_python_memory(func: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes allocated through Python's allocator (numpy included) while running ``func``."""
    tracemalloc.start()
    try:
        output = func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, output
