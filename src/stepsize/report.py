"""Report output: numpy-safe JSON, matplotlib PNGs (Agg), text tables and ``REPORT.md``.

Experiments and benchmarks describe their tables with :func:`table`; the CLI prints them with
:func:`format_table` and ``REPORT.md`` renders them with :func:`markdown_table`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "format_table",
    "markdown_table",
    "new_figure",
    "save_figure",
    "table",
    "to_jsonable",
    "write_json",
    "write_report",
]


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = ""
) -> dict:
    """A table as plain data: ``{"title", "columns", "rows", "note"}``.

    Cells may be numbers, strings or None (printed as a dash). ``note`` says where reference
    values come from.
    """
    columns = [str(c) for c in columns]
    rows = [list(r) for r in rows]
    for index, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(
                f"table {title!r}: row {index} has {len(row)} cells for {len(columns)} columns"
            )
    return {"title": title, "columns": columns, "rows": rows, "note": note}


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch/path values recursively into JSON-safe Python objects.

    Non-finite floats become ``None`` so that the output is strict JSON.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} to JSON")


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as strict, indented JSON and return the path."""
    path = Path(path)
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False)
    path.write_text(text + "\n")
    return path


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.0):
    """A matplotlib figure on the Agg backend (no display needed) and its axes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_table(tab: dict) -> str:
    """Render a :func:`table` as aligned plain text."""
    cells = [tab["columns"]] + [[_cell(v) for v in row] for row in tab["rows"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(tab["columns"]))]
    lines = [tab["title"]]
    for index, row in enumerate(cells):
        lines.append("  ".join(
            c.ljust(w) if column == 0 or index == 0 else c.rjust(w)
            for column, (c, w) in enumerate(zip(row, widths))
        ))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if tab.get("note"):
        lines.append(f"({tab['note']})")
    return "\n".join(lines)


def markdown_table(tab: dict) -> str:
    """Render a :func:`table` as GitHub markdown with its title in bold."""
    lines = [f"**{tab['title']}**", "", "| " + " | ".join(tab["columns"]) + " |"]
    lines.append("|" + "---|" * len(tab["columns"]))
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in tab["rows"]]
    if tab.get("note"):
        lines += ["", f"_{tab['note']}_"]
    return "\n".join(lines)


def write_report(out_dir: str | os.PathLike, payloads: Sequence[dict], command: str) -> Path:
    """Write ``out_dir/REPORT.md``: one section per payload with its tables and plots inline."""
    out_dir = Path(out_dir)
    parts = [
        "# stepsize: reproduction report",
        "",
        f"Produced by `{command}`.",
        "",
    ]
    for payload in payloads:
        parts += [f"## {payload['name']}", "", payload.get("description", ""), ""]
        timings = payload.get("timings", {})
        parts.append(
            f"seed {payload.get('seed')}, {'quick' if payload.get('quick') else 'full'} config, "
            f"{timings.get('run_s', float('nan')):.1f} s"
        )
        parts.append("")
        for tab in payload.get("tables", []):
            parts += [markdown_table(tab), ""]
        for plot in payload.get("plots", []):
            parts += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(parts))
    return path
