"""Reproductions, one module per paper; each registers an :class:`~stepsize._registry.Entry`.

To add one, create ``stepsize/experiments/NAME.py`` that calls ``register(Entry(...))`` at import;
nothing else changes. ``stepsize reproduce NAME`` runs it.
"""

from stepsize._registry import EXPERIMENTS, Entry

register = EXPERIMENTS.register

__all__ = ["EXPERIMENTS", "Entry", "register"]
