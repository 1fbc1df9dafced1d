"""Progress bars for long work: tqdm on a terminal, silent otherwise or when switched off."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None = None, **kwargs: Any):
    """Wrap ``iterable`` in a tqdm bar.

    ``progress=None`` (default) shows the bar only when stderr is a terminal; ``False`` never
    shows it; ``True`` always does.
    """
    from tqdm.auto import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(iterable, disable=not progress, leave=False, dynamic_ncols=True, **kwargs)
