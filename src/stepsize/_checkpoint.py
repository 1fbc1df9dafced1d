r"""Training checkpoints: one file format, one loader and one writer for every trainer.

A checkpoint is a torch file holding one dict::

    {"format": FORMAT, "kind": "...", "settings": {...}, "sha256": "...", **state}

``kind`` names the trainer family, ``settings`` every value that changes the result of a run
(hyperparameters, fingerprints of the data, model, teacher, operator, ...) and ``state`` what the
trainer needs to continue (parameters, optimizer state, generator state, history). Only tensors,
numbers, strings, ``None``, lists, tuples and dicts are written, so the file loads with
``torch.load(..., weights_only=True)``, which refuses to build any other object: a planted file
whose pickle would call ``os.system`` is refused before anything runs.

``sha256`` is the hash of a canonical serialization of ``(format, kind, settings, state)``:
every value is fed to SHA-256 with a type tag and a length, tensors as their dtype, shape and raw
bytes. Loading recomputes it, so one flipped bit anywhere in the data is a clear error instead of
a silently different run. Writes go to a temporary file in the same directory, are flushed to
disk and then renamed over the old file (``os.replace``), so a checkpoint is always either the
previous complete one or the new complete one.

Every failure to read, a foreign or corrupt file, another trainer's checkpoint and a checkpoint
written with other settings raises a ``ValueError`` that names the file and the reason.

Torch is imported inside the functions: importing :mod:`stepsize` does not import torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from stepsize._validation import describe

__all__ = [
    "FORMAT",
    "check_checkpoint_path",
    "fingerprint",
    "load_checkpoint",
    "module_fingerprint",
    "restoring",
    "save_checkpoint",
]

FORMAT = "stepsize.checkpoint/2"
_RESERVED = ("format", "kind", "settings", "sha256")
_ADVICE = "delete it or pass resume=False"
_PLAIN = "tensors, numbers, strings, None, lists, tuples and dicts"


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    return torch is not None and isinstance(value, torch.Tensor)


def _token(hasher, tag: bytes, data: bytes) -> None:
    hasher.update(tag + len(data).to_bytes(8, "little") + data)


def _tensor_bytes(tensor, where: str):
    import torch

    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_meta:
        raise TypeError(f"{where} is a {tensor.layout} tensor; a checkpoint holds dense tensors")
    flat = tensor.detach().resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(torch.uint8).numpy()


def _plain(value: Any, hasher, where: str) -> Any:
    """``value`` with numpy scalars made Python numbers and mappings made dicts, fed to
    ``hasher`` in a canonical form; anything but plain data raises TypeError naming ``where``."""
    if value is None:
        hasher.update(b"N")
        return None
    if isinstance(value, (bool, np.bool_)):
        hasher.update(b"B1" if value else b"B0")
        return bool(value)
    if isinstance(value, (int, np.integer)):
        _token(hasher, b"I", str(int(value)).encode())
        return int(value)
    if isinstance(value, (float, np.floating)):
        _token(hasher, b"F", float(value).hex().encode())
        return float(value)
    if isinstance(value, str):
        _token(hasher, b"S", value.encode("utf-8", "surrogatepass"))
        return str(value)
    if isinstance(value, (list, tuple)):
        tag = b"L" if isinstance(value, list) else b"T"
        hasher.update(tag + len(value).to_bytes(8, "little"))
        items = [_plain(item, hasher, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        hasher.update(b"D" + len(value).to_bytes(8, "little"))
        plain = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key {describe(key)}; keys must be str or int")
            plain[_plain(key, hasher, where)] = _plain(item, hasher, f"{where}[{key!r}]")
        return plain
    if _is_tensor(value):
        data = _tensor_bytes(value, where)
        _token(hasher, b"X", f"{value.dtype}{tuple(value.shape)}".encode())
        _token(hasher, b"R", memoryview(data))
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype != object:
        data = np.ascontiguousarray(value)
        _token(hasher, b"A", f"{data.dtype.str}{data.shape}".encode())
        _token(hasher, b"R", memoryview(data.reshape(-1).view(np.uint8)))
        return data
    raise TypeError(f"{where} is {describe(value)}; a checkpoint holds only {_PLAIN}")


def fingerprint(*values: Any) -> str:
    """A short hash (16 hex digits of SHA-256) of tensors, arrays and plain data.

    Two values get the same fingerprint when they have the same types, dtypes, shapes and bytes
    (dict order counts), so a checkpoint can record "the training data" or "the teacher" as one
    string in its settings.

    Args:
        values: tensors, numpy arrays, numbers, strings, None, and lists, tuples or dicts of them.

    Returns:
        16 lowercase hex digits.

    >>> a = np.arange(3.0)
    >>> fingerprint(a) == fingerprint(a.copy()), fingerprint(a) == fingerprint(a.astype("f4"))
    (True, False)
    """
    hasher = hashlib.sha256()
    _plain(values, hasher, "value")
    return hasher.hexdigest()[:16]


def _configuration(module) -> dict:
    """The public plain-valued attributes of ``module`` (sizes, bits, strides, ...)."""
    config = {}
    for key, value in sorted(vars(module).items()):
        if key.startswith("_") or key == "training":
            continue
        if callable(value) and not _is_tensor(value):
            config[key] = getattr(value, "__qualname__", type(value).__qualname__)
        elif value is None or isinstance(value, (bool, int, float, str, tuple)):
            config[key] = value if not isinstance(value, tuple) else repr(value)
    return config


def module_fingerprint(module, *, weights: bool) -> str:
    """A fingerprint of a ``torch.nn.Module``: its structure, and its values with ``weights``.

    The structure is, for every submodule, its name, class and public plain attributes (layer
    sizes, strides, quantizer bit widths, ...) and the name, dtype and shape of every entry of the
    state dict. With ``weights=True`` the state dict's values count too (for a fixed teacher);
    without, two freshly built copies with different random weights match (for a model whose
    weights the checkpoint restores).

    Args:
        module: the module.
        weights: include the parameter and buffer values.

    Returns:
        16 hex digits, as :func:`fingerprint`.

    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    >>> module_fingerprint(a, weights=False) == module_fingerprint(b, weights=False)
    True
    >>> module_fingerprint(a, weights=True) == module_fingerprint(b, weights=True)
    False
    >>> module_fingerprint(a, weights=False) == module_fingerprint(a.double(), weights=False)
    False
    """
    structure = [
        (name, f"{type(sub).__module__}.{type(sub).__qualname__}", _configuration(sub))
        for name, sub in module.named_modules()
    ]
    state = module.state_dict()
    if weights:
        return fingerprint(structure, dict(state))
    return fingerprint(structure, [(k, str(v.dtype), tuple(v.shape)) for k, v in state.items()])


def check_checkpoint_path(checkpoint: Any, name: str = "checkpoint") -> Path | None:
    """Validate a checkpoint argument: None, or a path in an existing directory that is not a
    directory or another non-file itself.

    >>> check_checkpoint_path(None) is None
    True
    """
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)) or isinstance(os.fspath(checkpoint), bytes):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got "
                        f"{describe(checkpoint)}")
    if os.fspath(checkpoint) == "":
        raise ValueError(f"{name} must be a file path, got ''")
    path = Path(checkpoint)
    if not path.parent.is_dir():
        raise ValueError(f"{name} directory {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise ValueError(f"{name} {path} exists and is not a regular file")
    return path


def _digest(kind: str, settings: Mapping, state: Mapping) -> tuple[str, dict, dict]:
    hasher = hashlib.sha256()
    plain = _plain({"format": FORMAT, "kind": kind, "settings": settings, "state": state},
                   hasher, "checkpoint")
    return hasher.hexdigest(), plain["settings"], plain["state"]


def save_checkpoint(path: str | os.PathLike, *, kind: str, settings: Mapping,
                    state: Mapping) -> None:
    """Write a checkpoint atomically (temporary file in the same directory, fsync, os.replace).

    Args:
        path: the checkpoint file.
        kind: the trainer family, e.g. ``"stepsize.unfolding"``.
        settings: every value that changes the result (plain data only).
        state: what the trainer restores (tensors and plain containers; keys other than
            ``format``, ``kind``, ``settings`` and ``sha256``).

    Raises:
        TypeError: if ``settings`` or ``state`` holds anything but plain data.
        OSError: if the file cannot be written (the old checkpoint is then left intact).

    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> save_checkpoint(f"{folder}/run.pt", kind="demo", settings={"lr": 0.1},
    ...                 state={"weights": torch.ones(2)})
    >>> load_checkpoint(f"{folder}/run.pt", kind="demo", settings={"lr": 0.1})["weights"]
    tensor([1., 1.])
    """
    import torch

    path = Path(path)
    clash = sorted(set(_RESERVED) & set(state))
    if clash:
        raise ValueError(f"state keys {clash} are reserved for the checkpoint format")
    sha256, settings, state = _digest(kind, settings, state)
    _refuse_arrays(settings, "settings")
    _refuse_arrays(state, "state")
    payload = {"format": FORMAT, "kind": kind, "settings": settings, "sha256": sha256, **state}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) or _writer_failure(exc):
            raise OSError(f"cannot write checkpoint {path}: {exc}") from exc
        raise
    _sync_directory(path.parent)


def _writer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's zip writer failing to write (a full disk inside
    ``torch.save`` surfaces as ``RuntimeError: [enforce fail at inline_container.cc ...]``)."""
    return isinstance(exc, RuntimeError) and any(
        mark in str(exc) for mark in ("inline_container", "PytorchStreamWriter"))


def _sync_directory(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _reason(exc: Exception) -> str:
    """Why torch could not read a file, without torch's advice to retry with weights_only=False."""
    text = str(exc)
    refused = re.search(r"unsupported GLOBAL (\S+)", text) or re.search(
        r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return (f"it asks to call or build {refused.group(1)}, which is not plain data; refused "
                "without running it")
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand:
        return f"not a torch file of plain data (pickle operand {operand.group(1)} refused)"
    first = text.strip().splitlines()[0] if text.strip() else "no data"
    first = first if len(first) <= 160 else first[:157] + "..."
    return f"{type(exc).__name__}: {first}"


def load_checkpoint(path: str | os.PathLike, *, kind: str, settings: Mapping,
                    hints: Mapping[str, str] | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` and check it completely.

    The file is read with ``weights_only=True`` onto the CPU; then its format, ``kind``, content
    hash and settings are checked, in that order.

    Args:
        path: the checkpoint file.
        kind: the trainer family expected.
        settings: this run's settings; every key must hold the saved value.
        hints: extra advice appended when a given setting differs.

    Returns:
        The state dict saved (without the format fields).

    Raises:
        ValueError: naming ``path`` when the file cannot be read, is corrupt (content hash
            mismatch), foreign, from another trainer, or was written with other settings (all
            differing settings are named).

    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/run.pt"
    >>> save_checkpoint(path, kind="demo", settings={"lr": 0.1}, state={"epoch": 3})
    >>> load_checkpoint(path, kind="demo", settings={"lr": 0.2})
    Traceback (most recent call last):
    ...
    ValueError: checkpoint .../run.pt was written for a different configuration: lr is 0.1 there ...
    """
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, foreign or hostile files
        raise ValueError(
            f"checkpoint {path} is corrupted or not a stepsize checkpoint ({_reason(exc)}); "
            f"{_ADVICE}"
        ) from None
    found = loaded.get("format") if isinstance(loaded, dict) else None
    if found != FORMAT:
        what = (f"format {found!r}, this version reads {FORMAT!r}" if isinstance(found, str)
                else f"it holds {describe(loaded)}" if not isinstance(loaded, dict)
                else f"a dict with keys {sorted(map(str, loaded))[:6]}")
        raise ValueError(f"checkpoint {path} is not a {kind} checkpoint ({what}); {_ADVICE}")
    if loaded.get("kind") != kind:
        raise ValueError(
            f"checkpoint {path} is not a {kind} checkpoint (it was written by "
            f"{loaded.get('kind')!r}); {_ADVICE} or use another file"
        )
    state = {key: value for key, value in loaded.items() if key not in _RESERVED}
    try:
        computed, saved_settings, state = _digest(kind, loaded.get("settings"), state)
    except TypeError as exc:
        raise ValueError(f"checkpoint {path} is corrupted ({exc}); {_ADVICE}") from None
    if not isinstance(saved_settings, dict):
        raise ValueError(f"checkpoint {path} is corrupted (its settings are not a dict); {_ADVICE}")
    if computed != loaded.get("sha256"):
        raise ValueError(
            f"checkpoint {path} is corrupted: its content does not match its SHA-256 (saved "
            f"{str(loaded.get('sha256'))[:16]}..., computed {computed[:16]}...); {_ADVICE}"
        )
    _check_settings(path, saved_settings, dict(settings), hints or {})
    return state


def _refuse_arrays(value: Any, where: str) -> None:
    """numpy arrays hash fine (fingerprints) but ``weights_only`` loading refuses them: a file
    holding one could never be resumed, so it is refused when written."""
    if isinstance(value, np.ndarray):
        raise TypeError(f"{where} is a numpy array; store it as a tensor (torch.from_numpy) so "
                        f"that the checkpoint loads with weights_only=True")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_arrays(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_arrays(item, f"{where}[{i}]")


def _same(saved: Any, current: Any) -> bool:
    """Equal as stored: compared through their content hashes, so tensors compare by value and
    a NaN setting equals itself."""
    digests = []
    for value in (saved, current):
        hasher = hashlib.sha256()
        _plain(value, hasher, "settings")
        digests.append(hasher.digest())
    return digests[0] == digests[1]


def _check_settings(path: Path, saved: dict, current: dict, hints: Mapping[str, str]) -> None:
    current = _plain(current, hashlib.sha256(), "settings")  # the types the file holds
    differences, advice = [], ""
    for key in [*current, *(k for k in saved if k not in current)]:
        if key not in saved:
            differences.append(f"{key} is not recorded there but {current[key]!r} here")
        elif key not in current:
            differences.append(f"{key} is {saved[key]!r} there but not set here")
        elif not _same(saved[key], current[key]):
            differences.append(f"{key} is {saved[key]!r} there but {current[key]!r} here")
        else:
            continue
        advice += hints.get(key, "")
    if differences:
        raise ValueError(
            f"checkpoint {path} was written for a different configuration: "
            f"{'; '.join(differences)}{advice}; pass resume=False or use another file"
        )


@contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Turn an error while applying a checked checkpoint's state into a ValueError naming it."""
    try:
        yield
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"checkpoint {path} has the right configuration but unreadable contents "
            f"({type(exc).__name__}: {exc}); {_ADVICE}"
        ) from exc
