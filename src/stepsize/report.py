"""Report output: numpy-safe JSON, matplotlib PNGs (Agg), text tables and ``REPORT.md``.

Experiments and benchmarks describe their tables with :func:`table`; the CLI prints them with
:func:`format_table` and ``REPORT.md`` renders them with :func:`markdown_table`. The folder they
are written into is guarded by :class:`OutputDir`: stepsize's own files only are overwritten
(others need ``force``), one run at a time, every file replaced atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not serialized
    fcntl = None

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "OutputDir",
    "OutputError",
    "format_table",
    "markdown_table",
    "new_figure",
    "save_figure",
    "table",
    "to_jsonable",
    "write_json",
    "write_report",
]

MANIFEST_NAME = ".stepsize-files.json"
LOCK_NAME = ".stepsize.lock"
_STAGING_PREFIX = ".stepsize-staging-"
_KEPT_MARKER = ".kept"
_REPORT_TITLE = "# stepsize: reproduction report"


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


def _file_mode(path: Path) -> int:
    """The permissions of ``path``, or those of a new file under the umask (temporary files
    are created private)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, then give it the name ``path``."""
    handle = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
        encoding="utf-8",
    )
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, _file_mode(path))
        os.replace(handle.name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
    return path


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as strict, indented JSON (atomically) and return the path."""
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False)
    return _write_text_atomic(Path(path), text + "\n")


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
        _REPORT_TITLE,
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
    return _write_text_atomic(out_dir / "REPORT.md", "\n".join(parts))


# ---------------------------------------------------------------------------------------------
# The output folder of `stepsize reproduce` and `stepsize bench`


class OutputError(ValueError):
    """An output folder that cannot be used: invalid, locked, or holding a file not ours."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    return "not a directory"


class OutputDir:
    """The folder that ``stepsize reproduce`` and ``stepsize bench`` write into.

    Used as a context manager, it

    - validates the path (non-empty, a directory or creatable, writable) and creates it;
    - locks it against a concurrent run: ``.stepsize.lock`` holds an exclusive ``flock`` and the
      pid of its holder for the message; the kernel drops the lock when its process dies, so a
      lock file left by a killed run (a stale lock) is simply taken over;
    - overwrites only files that stepsize wrote: ``.stepsize-files.json`` records the SHA-256 of
      every file committed here, and a file counts as stepsize's when its content still has
      that hash (a file written before the record existed counts when it is recognizably
      stepsize's: a result JSON with ``name``, ``version``, ``config`` and ``timings``, a plot
      listed by one, or a ``REPORT.md`` with the report's title). Any other file is refused
      unless ``force``;
    - writes atomically: files are produced in a hidden staging folder inside and moved into
      place with ``os.replace`` by :meth:`commit`.

    Args:
        path: the folder (created with its parents if missing).
        force: overwrite files that are not stepsize's.
        name: the argument name used in messages.

    Raises:
        OutputError: (a ``ValueError``) with one line naming the file or folder and the fix.

    >>> import tempfile
    >>> with OutputDir(tempfile.mkdtemp()) as folder, folder.staging() as stage:
    ...     _ = (stage / "demo.json").write_text("{}")
    ...     [p.name for p in folder.commit(stage)]
    ['demo.json']
    """

    def __init__(self, path: str | os.PathLike, *, force: bool = False, name: str = "--out"):
        self.name = name
        if not os.fspath(path):
            raise OutputError(f"{name} must be a directory name, got ''; use {name} . for the "
                              f"current directory")
        self.path = Path(path)
        self.force = force
        self._lock_fd: int | None = None
        self._kept: set[Path] = set()

    # -- validation and lock ------------------------------------------------------------------

    def __enter__(self) -> OutputDir:
        shown = f"{self.name} {str(self.path)!r}"
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        except NotADirectoryError:
            blocker = next(p for p in self.path.parents if p.exists() and not p.is_dir())
            raise OutputError(
                f"{shown} is not a writable directory: {str(blocker)!r} is a file"
            ) from None
        except OSError as exc:
            raise OutputError(f"{shown} cannot be used ({exc.strerror})") from None
        if mode is not None and not stat.S_ISDIR(mode):
            raise OutputError(f"{shown} is {_kind(mode)}, not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise OutputError(f"{shown} is not a writable directory ({exc.strerror})") from None
        self._lock()
        self._remove_abandoned_stages()
        return self

    def _remove_abandoned_stages(self) -> None:
        """Staging folders of runs that were killed (SIGKILL, out of memory) before cleaning
        up; safe under the lock, which no other run holds. Kept stages (a refused commit whose
        files the message pointed to) stay."""
        for stage in self.path.glob(_STAGING_PREFIX + "*"):
            if stage.is_dir() and not stage.is_symlink() and not (stage / _KEPT_MARKER).exists():
                shutil.rmtree(stage, ignore_errors=True)

    def __exit__(self, *exc_info) -> None:
        self._unlock()

    def _lock(self) -> None:
        if fcntl is None:
            return
        lock_path = self.path / LOCK_NAME
        while True:
            # O_NOFOLLOW: a planted symlink must not make us truncate the file it points to
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644)
            except OSError as exc:
                raise OutputError(f"cannot use the lock file {str(lock_path)!r} in {self.name} "
                                  f"({exc.strerror}); remove it if it is not a stepsize "
                                  f"lock") from None
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
                os.close(fd)
                raise OutputError(f"the lock file {str(lock_path)!r} in {self.name} is not a "
                                  f"plain file; remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(
                    f"another stepsize run (pid {holder}) is writing into {self.name} "
                    f"{str(self.path)!r}; wait for it to finish or choose another {self.name}"
                ) from None
            # The previous holder removes the file before unlocking: retry on a removed one.
            try:
                current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / LOCK_NAME)
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- ownership ----------------------------------------------------------------------------

    def _manifest(self) -> dict[str, str]:
        try:
            record = json.loads((self.path / MANIFEST_NAME).read_text(encoding="utf-8"))
            files = record["files"]
        except (OSError, ValueError, TypeError, KeyError):
            return {}
        return files if isinstance(files, dict) else {}

    def _recognized(self) -> set[str]:
        """Files written by stepsize before the manifest existed, recognized by content."""
        names = set()
        for path in self.path.glob("*.json"):
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (isinstance(payload, dict) and path.name.endswith(f"{payload.get('name')}.json")
                    and {"version", "config", "timings"} <= set(payload)):
                names.add(path.name)
                plots = payload.get("plots")
                if isinstance(plots, list):
                    names.update(p for p in plots if isinstance(p, str))
        with contextlib.suppress(OSError):
            with open(self.path / "REPORT.md", encoding="utf-8") as handle:
                if handle.readline().rstrip("\n") == _REPORT_TITLE:
                    names.add("REPORT.md")
        return names

    def foreign(self, patterns: Iterable[str]) -> list[Path]:
        """Existing files matching the glob ``patterns`` that stepsize did not write."""
        manifest, recognized = self._manifest(), None
        found = []
        for pattern in patterns:
            for path in sorted(self.path.glob(pattern)):
                if path.name in (MANIFEST_NAME, LOCK_NAME) or path.name.startswith(
                        _STAGING_PREFIX):
                    continue
                if path.name in manifest and path.is_file():
                    if _sha256(path) == manifest[path.name]:
                        continue
                if recognized is None:
                    recognized = self._recognized()
                if path.name not in recognized or path.name in manifest:
                    found.append(path)
        return found

    def check(self, patterns: Iterable[str]) -> None:
        """Refuse (unless ``force``) when a file matching ``patterns`` is not stepsize's.

        Raises:
            OutputError: naming the first such file and ``--force``.
        """
        if self.force:
            return
        foreign = self.foreign(patterns)
        if foreign:
            raise OutputError(
                f"{str(foreign[0])!r} exists and was not written by stepsize; pass --force to "
                f"overwrite it, or choose another {self.name}"
            )

    # -- staging and commit -------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh hidden folder inside for one run's files; removed on exit unless kept."""
        stage = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.path))
        try:
            yield stage
        finally:
            if stage not in self._kept:
                shutil.rmtree(stage, ignore_errors=True)

    def commit(self, stage: Path) -> list[Path]:
        """Move every file of ``stage`` into the folder and record it as stepsize's.

        Nothing moves if one of them would overwrite a file that is not stepsize's (without
        ``force``); the staged files are then kept and the message says where.

        Returns:
            The paths written, in name order.
        """
        names = sorted(p.name for p in stage.iterdir() if p.is_file())
        try:
            self.check(names)
        except OutputError as exc:
            self._kept.add(stage)
            (stage / _KEPT_MARKER).touch()  # a later run leaves this one in place
            raise OutputError(f"{exc}; this run's files are kept in {str(stage)!r}") from None
        manifest = self._manifest()
        written = []
        for name in names:
            manifest[name] = _sha256(stage / name)
            os.replace(stage / name, self.path / name)
            written.append(self.path / name)
        record = {"written_by": "stepsize", "files": dict(sorted(manifest.items()))}
        _write_text_atomic(self.path / MANIFEST_NAME, json.dumps(record, indent=1) + "\n")
        return written
