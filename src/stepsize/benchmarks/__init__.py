"""Side-by-side comparisons with peer libraries (the ``bench`` extra), one module per capability.

Each module registers an :class:`~stepsize._registry.Entry`; ``stepsize bench NAME`` runs it and
writes ``bench_NAME.json``. Peers are imported inside ``run``. Timings use
:func:`stepsize._reference.timing.median_time` (one warm-up, then the median of repeats).
"""

from stepsize._registry import BENCHMARKS, Entry

register = BENCHMARKS.register

__all__ = ["BENCHMARKS", "Entry", "register"]
