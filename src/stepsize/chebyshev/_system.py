"""Input checks of the solvers, done once at the public boundary, and the interval to use.

A system is ``(W, c, x0, x_true)``: W a dense, sparse or torch matrix, a LinearOperator, a
:class:`~stepsize.chebyshev.operators.NormalOperator` or a batch of torch matrices; c of shape
(n,) or (n, k); x0 and x_true shaped like c. The checks raise ``ValueError`` / ``TypeError``
naming the argument and the bad value; past them, the drivers and kernels trust their inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

from stepsize._validation import check_array, check_int, check_real
from stepsize.chebyshev._backend import is_torch, like, to_numpy
from stepsize.chebyshev._torch_support import BatchedMatrices
from stepsize.chebyshev.operators import NormalOperator
from stepsize.chebyshev.spectrum import Spectrum, as_matrix_or_operator, estimate_spectrum
from stepsize.chebyshev.steps import _check_interval

__all__ = ["check_budget", "given_interval", "spectrum_of", "validated_system"]


def _check_torch(tensor, name: str):
    """A torch operand: on a real device, real float32/float64 (ints become float64), finite."""
    import torch

    if tensor.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and has no values to solve with")
    if tensor.is_complex():
        raise TypeError(f"{name} must be real, got {tensor.dtype}; Chebyshev steps need a real "
                        f"SPD system (solve the real and imaginary parts of c separately)")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} has dtype {tensor.dtype}, whose 8- to 11-bit mantissa cannot "
                        f"resolve a linear solve; cast with .float() (mixed_precision=True "
                        f"refines float32 periods to float64 accuracy)")
    if not tensor.is_floating_point():
        tensor = tensor.double()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite, but it has NaN or infinite entries")
    return tensor


def _validated_vector(value, name: str, like_value):
    """Check ``c``, ``x0`` or ``x_true``: finite, real floating, and shaped like ``like_value``."""
    if is_torch(value):
        value = _check_torch(value, name)
    else:
        value = check_array(value, name, ndim=(1, 2), dtype=None)
        if value.dtype.kind == "c":
            raise TypeError(f"{name} must be real, got {value.dtype}; Chebyshev steps need a "
                            f"real SPD system (solve the real and imaginary parts separately)")
        if value.dtype.kind != "f":
            value = value.astype(np.float64)
    if like_value is not None and tuple(value.shape) != tuple(like_value.shape):
        raise ValueError(f"{name} must have the shape of c {tuple(like_value.shape)}, got "
                         f"{tuple(value.shape)}")
    return value


def _check_torch_matrix(W):
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square matrix, got shape {tuple(W.shape)}")
    W = _check_torch(W, "W")
    gap = float((W - W.T).abs().max())
    if gap > 1e-6 * max(float(W.abs().max()), np.finfo(float).tiny):
        raise ValueError(f"W must be symmetric: max |W - W^T| = {gap:.3g}")
    return W


def validated_system(W, c, x0, x_true=None):
    """Check the operator and vectors once; return W, c, the starting point and x_true."""
    operand = W.A if isinstance(W, NormalOperator) else W
    operand = operand.W if isinstance(operand, BatchedMatrices) else operand
    if is_torch(operand) != is_torch(c):
        raise TypeError(f"W and c must both be torch tensors or neither, got "
                        f"{type(operand).__name__} and {type(c).__name__}")
    if is_torch(W):
        W = _check_torch_matrix(W)
    elif not isinstance(W, (NormalOperator, BatchedMatrices)):
        W = as_matrix_or_operator(W)
    c = _validated_vector(c, "c", None)
    if c.ndim not in (1, 2) or c.shape[0] != W.shape[0]:
        raise ValueError(f"c must have shape ({W.shape[0]},) or ({W.shape[0]}, k), got "
                         f"{tuple(c.shape)}")
    if is_torch(W) and (W.device != c.device or W.dtype != c.dtype):
        raise ValueError(f"W and c must share device and dtype, got {W.device}/{W.dtype} and "
                         f"{c.device}/{c.dtype}")
    x0 = c * 0 if x0 is None else _validated_vector(x0, "x0", c)
    if x_true is not None:
        x_true = _validated_vector(x_true, "x_true", c)
    return W, c, x0, x_true


def check_budget(max_iter, tol, default: int | None) -> tuple[int | None, float | None]:
    """The iteration cap (``default`` when ``max_iter`` is None) and the checked tolerance."""
    n_iter = default if max_iter is None else check_int(max_iter, "max_iter", low=1)
    if tol is not None:
        tol = check_real(tol, "tol", low=0, low_inclusive=False)
    return n_iter, tol


def given_interval(spectrum, lmin, lmax) -> tuple[float, float, int] | None:
    """``(lmin, lmax, matvecs)`` from ``spectrum`` or ``lmin``/``lmax``; None to estimate."""
    if spectrum is not None:
        if not isinstance(spectrum, Spectrum):
            raise TypeError(f"spectrum must be a Spectrum, got {type(spectrum).__name__}")
        return spectrum.lmin, spectrum.lmax, spectrum.matvecs
    if lmin is not None and lmax is not None:
        lmin, lmax = _check_interval(lmin, lmax)
        return lmin, lmax, 0
    if lmin is not None or lmax is not None:
        raise ValueError("give both lmin and lmax, or neither (to estimate them)")
    return None


def spectrum_of(W, spectrum, lmin, lmax, seed) -> tuple[float, float, int]:
    """The interval given, or :func:`estimate_spectrum`'s (mixed precision and heavy ball)."""
    given = given_interval(spectrum, lmin, lmax)
    if given is not None:
        return given
    operator = W
    if is_torch(W) or isinstance(W, NormalOperator):
        operand = W.A if isinstance(W, NormalOperator) else W
        operator = spla.LinearOperator(W.shape, matvec=lambda v: to_numpy(W @ like(operand, v)),
                                       dtype=np.float64)
    estimate = estimate_spectrum(operator, seed=seed)
    if estimate.lmin <= 1e-12 * estimate.lmax:
        raise ValueError(f"W appears singular (estimated lmin {estimate.lmin:.3g}, lmax "
                         f"{estimate.lmax:.3g}); Chebyshev steps need lmin > 0")
    return estimate.lmin, estimate.lmax, estimate.matvecs
