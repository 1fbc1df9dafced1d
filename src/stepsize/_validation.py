"""Input checks shared by every public entry point.

Each helper validates one argument, returns it in canonical form and raises a ``ValueError`` or
``TypeError`` whose message names the argument and shows the offending value. Public functions
call these once at their boundary; internal kernels trust their inputs.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_array",
    "check_callback",
    "check_choice",
    "check_finite",
    "check_int",
    "check_positive_definite",
    "check_progress",
    "check_real",
    "check_rng",
    "check_square",
    "check_symmetric",
    "describe",
]


def describe(value: Any) -> str:
    """Short description of a value for error messages (arrays by shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not np.isscalar(value):
        dtype = getattr(value, "dtype", None)
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite Python float inside the given bounds.

    >>> check_real(0.5, "alpha", low=0, high=1)
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and np.isrealobj(value):
            value = value.item()
        elif hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
            value = value.item()  # a one-element torch tensor
        else:
            raise TypeError(f"{name} must be a real number, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        relation = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {relation} {low}, got {value!r}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        relation = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {relation} {high}, got {value!r}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as a Python int inside ``[low, high]``.

    >>> check_int(3, "T", low=1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_callback(value: Any, name: str = "callback", *, arguments: str | None = None) -> Any:
    """None or a callable, checked before any work (a bad one would fail after the first round).

    With ``arguments`` (e.g. ``"progress"``), the callable must also accept exactly that one
    positional argument, when its signature can be read (a builtin's may not): a callback written
    for another protocol, e.g. ``callback(step, model)``, is refused up front.

    >>> check_callback(lambda progress: None, arguments="progress") is not None
    True
    >>> check_callback(lambda step, model: None, arguments="progress")
    Traceback (most recent call last):
    TypeError: callback must take one argument (progress), but its signature is (step, model)
    """
    if value is None:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be None or a callable, got {describe(value)}")
    if arguments is not None:
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):  # no readable signature: trusted
            return value
        try:
            signature.bind(None)
        except TypeError:
            raise TypeError(f"{name} must take one argument ({arguments}), but its signature "
                            f"is {signature}") from None
    return value


def check_progress(value: Any, name: str = "progress") -> bool | None:
    """``progress``: None (a bar when stderr is a terminal), True or False."""
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True, False or None, got {describe(value)}")
    return None if value is None else bool(value)


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    """Raise if ``array`` holds NaN or inf; return it unchanged."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} must be finite, but it has {bad} NaN or infinite entries")
    return array


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: Any = np.float64,
    finite: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """Convert ``value`` to a numpy array and check its dimensions, shape and finiteness.

    ``shape`` may contain ``None`` for free axes. Complex input is refused when ``dtype`` is real.

    >>> check_array([[1, 2], [3, 4]], "W", ndim=2).dtype
    dtype('float64')
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        if getattr(value, "is_meta", False):
            raise ValueError(f"{name} is a tensor on the meta device (it has no data), got "
                             f"{describe(value)}")
        value = value.detach().cpu().numpy()
    try:
        raw = np.asarray(value)
    except Exception as exc:  # ragged lists and other non-array inputs
        raise TypeError(f"{name} must be array-like, got {describe(value)}") from exc
    if raw.dtype == object or raw.dtype.kind in "USV":
        raise TypeError(f"{name} must be numeric, got {describe(raw)}")
    if dtype is not None:
        if np.iscomplexobj(raw) and not np.issubdtype(np.dtype(dtype), np.complexfloating):
            raise TypeError(f"{name} must be real, got complex {describe(raw)}")
        raw = raw.astype(dtype, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if raw.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {raw.shape}")
    if shape is not None:
        if raw.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(raw.shape, shape)
        ):
            pretty = ", ".join("*" if s is None else str(s) for s in shape)
            pretty = f"({pretty},)" if len(shape) == 1 else f"({pretty})"
            raise ValueError(f"{name} must have shape {pretty}, got {raw.shape}")
    if raw.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {raw.shape}")
    if finite and raw.dtype.kind in "fc":
        check_finite(raw, name)
    return raw


def check_square(matrix: np.ndarray, name: str) -> np.ndarray:
    """Raise unless ``matrix`` is two-dimensional and square."""
    shape = getattr(matrix, "shape", ())
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {tuple(shape)}")
    return matrix


def check_symmetric(matrix: Any, name: str, *, rtol: float = 1e-10) -> Any:
    """Raise unless the dense or sparse square ``matrix`` equals its transpose to ``rtol``.

    The tolerance is relative to the largest absolute entry.
    """
    check_square(matrix, name)
    if _sparse_exactly_symmetric(matrix):
        return matrix
    difference = matrix - matrix.T
    if hasattr(difference, "toarray"):
        gap = abs(difference).max() if difference.nnz else 0.0
        scale = abs(matrix).max() if matrix.nnz else 0.0
    else:
        gap = float(np.max(np.abs(difference))) if matrix.size else 0.0
        scale = float(np.max(np.abs(matrix))) if matrix.size else 0.0
    check_symmetry_gap(gap, scale, name, rtol)
    return matrix


def check_symmetry_gap(gap: float, scale: float, name: str, rtol: float = 1e-10) -> None:
    """Raise unless ``gap = max |M - M^T|`` is within ``rtol`` of ``scale = max |M_ij|`` (the
    rule of :func:`check_symmetric`, for callers that compute the two maxima themselves)."""
    tiny = np.finfo(float).tiny
    if gap > rtol * max(scale, tiny):
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}^T| = {gap:.3g} "
            f"(relative {gap / max(scale, tiny):.3g} > {rtol:g})"
        )


def _sparse_exactly_symmetric(matrix: Any) -> bool:
    """Fast path: a canonical CSR matrix whose CSC form has the same arrays is symmetric.

    One O(nnz) conversion instead of forming ``matrix - matrix.T`` (10x slower on small
    matrices, where the check dominated a solver call). False means "not shown", not "asymmetric".
    """
    if getattr(matrix, "format", None) != "csr" or not matrix.has_canonical_format:
        return False
    other = matrix.tocsc()
    other.sum_duplicates()
    return (np.array_equal(matrix.indptr, other.indptr)
            and np.array_equal(matrix.indices, other.indices)
            and np.array_equal(matrix.data, other.data))


def check_positive_definite(matrix: np.ndarray, name: str, *, semi: bool = False) -> np.ndarray:
    """Raise unless the dense symmetric ``matrix`` is positive definite (or semidefinite).

    Definite matrices are tested by a Cholesky factorization; semidefinite ones by the smallest
    eigenvalue against a tolerance relative to the largest.
    """
    check_symmetric(matrix, name, rtol=1e-8)
    if not semi:
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError:
            lowest = float(np.linalg.eigvalsh(matrix)[0])
            raise ValueError(
                f"{name} must be positive definite, but its smallest eigenvalue is {lowest:.3g}"
            ) from None
        return matrix
    eigenvalues = np.linalg.eigvalsh(matrix)
    tolerance = 1e-10 * max(abs(eigenvalues[-1]), 1.0)
    if eigenvalues[0] < -tolerance:
        raise ValueError(
            f"{name} must be positive semidefinite, but its smallest eigenvalue is "
            f"{eigenvalues[0]:.3g}"
        )
    return matrix


def check_rng(seed: Any, name: str = "seed") -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from ``None``, an int or a Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None, an int or a numpy.random.Generator, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be non-negative, got {seed}")
    return np.random.default_rng(int(seed))
