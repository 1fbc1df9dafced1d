"""Registries of experiments and benchmarks, discovered from their subpackages' modules.

A module in ``stepsize/experiments/`` (or ``stepsize/benchmarks/``) registers itself at import
with :func:`register`; the CLI imports every module of the package to find them. Modules must
import heavy dependencies (torch, the bench peers) inside ``run`` so that listing stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Registry", "BENCHMARKS", "EXPERIMENTS"]


@dataclass(frozen=True)
class Entry:
    """One runnable experiment or benchmark.

    Attributes:
        name: the name used on the command line.
        description: one line for ``stepsize list``.
        quick: configuration of ``--quick`` (seconds to a minute on 2 cores).
        full: configuration of the full run (the paper's settings).
        run: ``run(config, seed) -> dict``; the dict holds the JSON fields and a ``tables`` list
            of :func:`stepsize.report.table` dicts.
        plot: ``plot(result, out_dir) -> list of PNG paths``.
        requires: extras needed, for the error message when they are missing.
    """

    name: str
    description: str
    quick: dict[str, Any]
    full: dict[str, Any]
    run: Callable[[dict[str, Any], int], dict[str, Any]]
    plot: Callable[[dict[str, Any], Path], list[Path]]
    requires: tuple[str, ...] = field(default=())


class Registry:
    """Name -> :class:`Entry`, filled by importing every module of ``package``.

    ``package=None`` gives a registry of exactly ``entries`` (nothing is discovered): the seam
    through which tests and embedders hand :func:`stepsize.cli.main` their own experiments.

    >>> only = Registry(None, "experiment", [Entry("x", "one", {}, {}, dict, list)])
    >>> only.names(), only.get("x").description
    (['x'], 'one')
    """

    def __init__(self, package: str | None, kind: str, entries: Iterable[Entry] = ()):
        if package is not None and not isinstance(package, str):
            raise TypeError(f"package must be a str or None, got {type(package).__name__}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty str, got {kind!r}")
        self.package = package
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._discovered = package is None
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
            raise TypeError(f"entries must be an iterable of Entry, got {type(entries).__name__}")
        for entry in entries:
            self.register(entry)

    def register(self, entry: Entry) -> Entry:
        if not isinstance(entry, Entry):
            raise TypeError(f"entry must be an Entry, got {type(entry).__name__}")
        if entry.name in self._entries and self._entries[entry.name] is not entry:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        self._discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]


EXPERIMENTS = Registry("stepsize.experiments", "experiment")
BENCHMARKS = Registry("stepsize.benchmarks", "benchmark")
