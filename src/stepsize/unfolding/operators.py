r"""Linear operators for unfolded gradient descent: dense, callable, LinearOperator, eigenbasis.

Batches are row vectors, as in the authors' notebook: ``x`` has shape ``(batch, n)`` and
``y = A x`` is computed as ``x @ A.T`` with shape ``(batch, m)``. Every operator is a
``torch.nn.Module`` whose data are non-persistent buffers, so ``model.to(device)`` moves them and
``state_dict()`` holds only the learned parameters.

The eigenbasis form replaces :math:`A = U \Sigma V^\top` by :math:`\Sigma` (square, diagonal,
:math:`\sigma_i = \sqrt{\lambda_i(A^\top A)}`). Because :math:`x^* \sim N(0, I)` is rotation
invariant, training on :math:`\Sigma` is statistically the same problem as training on :math:`A`
for noiseless data :math:`y = A x^*`, at :math:`O(n)` instead of :math:`O(mn)` per layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from stepsize._validation import check_array, check_int, describe

__all__ = [
    "CallableOperator",
    "DenseOperator",
    "DiagonalOperator",
    "Operator",
    "as_operator",
    "gram_matrix",
]


class Operator(nn.Module):
    """A linear map :math:`A: \\mathbb{R}^n \\to \\mathbb{R}^m` acting on batches of rows.

    Subclasses define ``apply`` (``(batch, n) -> (batch, m)``), ``adjoint``
    (``(batch, m) -> (batch, n)``), the sizes ``n`` and ``m``, ``gram_eigenvalues`` (the spectrum
    of :math:`A^\\top A` when it is cheap to know, else None) and ``fingerprint`` (a hash of the
    operator's data, used to refuse a checkpoint written for another operator).
    """

    n: int
    m: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gram_eigenvalues(self) -> np.ndarray | None:
        return None

    def fingerprint(self) -> str:
        raise NotImplementedError

    def reference(self) -> torch.Tensor | None:
        """A tensor that carries the operator's dtype and device (None for callables)."""
        return None


def refuse_meta(value, name: str):
    """Refuse a tensor on the meta device (a shape without data) before it is read."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        raise ValueError(
            f"{name} is a tensor on the meta device (it has no data), got {describe(value)}"
        )
    return value


def checked_array(value, name: str, **checks) -> np.ndarray:
    """:func:`~stepsize._validation.check_array` that also refuses meta-device tensors."""
    return check_array(refuse_meta(value, name), name, **checks)


def _hash_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()[:16]


def _as_tensor(value, name: str, ndim: int, dtype: torch.dtype | None) -> torch.Tensor:
    """Validate (shape, finiteness) once and return a tensor, keeping a tensor's device."""
    checked = checked_array(value, name, ndim=ndim)
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            value = value.to(torch.float64)
        return value.detach().to(dtype or value.dtype)
    return torch.as_tensor(checked, dtype=dtype or torch.float64)


class DenseOperator(Operator):
    """A dense matrix ``A`` of shape ``(m, n)`` (the paper's A; the notebook's ``H`` is ``A.T``).

    >>> op = DenseOperator([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> op.apply(torch.ones(1, 2, dtype=torch.float64)).tolist()
    [[1.0, 2.0, 2.0]]
    """

    def __init__(self, matrix, *, dtype: torch.dtype | None = None):
        super().__init__()
        matrix = _as_tensor(matrix, "operator", 2, dtype)
        self.register_buffer("matrix", matrix, persistent=False)
        self.m, self.n = matrix.shape

    def apply(self, x):
        return x @ self.matrix.T

    def adjoint(self, y):
        return y @ self.matrix

    def gram_eigenvalues(self):
        matrix = self.matrix.detach().cpu().to(torch.float64).numpy()
        return np.linalg.eigvalsh(matrix.T @ matrix)

    def fingerprint(self):
        return "dense:" + _hash_array(self.matrix.detach().cpu().to(torch.float64).numpy())

    def reference(self):
        return self.matrix

    def extra_repr(self):
        return f"m={self.m}, n={self.n}"


class DiagonalOperator(Operator):
    r"""The eigenbasis form :math:`\Sigma = \operatorname{diag}(\sqrt{\lambda_i})` (square).

    Args:
        eigenvalues: the spectrum :math:`\lambda_i \ge 0` of :math:`A^\top A` (any order).

    >>> op = DiagonalOperator([1.0, 4.0])
    >>> op.apply(torch.ones(1, 2, dtype=torch.float64)).tolist()
    [[1.0, 2.0]]
    """

    def __init__(self, eigenvalues, *, dtype: torch.dtype | None = None):
        super().__init__()
        eigenvalues = _as_tensor(eigenvalues, "eigenvalues", 1, dtype)
        if bool((eigenvalues < 0).any()):
            raise ValueError(
                f"eigenvalues must be >= 0 (they are the spectrum of A^T A), got minimum "
                f"{float(eigenvalues.min()):.3g}"
            )
        self.register_buffer("singular_values", eigenvalues.sqrt(), persistent=False)
        self.register_buffer("eigenvalues", eigenvalues, persistent=False)
        self.m = self.n = eigenvalues.shape[0]

    def apply(self, x):
        return x * self.singular_values

    def adjoint(self, y):
        return y * self.singular_values

    def gram_eigenvalues(self):
        return np.sort(self.eigenvalues.detach().cpu().to(torch.float64).numpy())

    def fingerprint(self):
        return "diagonal:" + _hash_array(self.gram_eigenvalues())

    def reference(self):
        return self.eigenvalues

    def extra_repr(self):
        return f"n={self.n}"


class _ScipyLinearOperatorFunction(torch.autograd.Function):
    """``x -> A x`` for an object with ``matmat``/``rmatmat``; its gradient is ``A^T``."""

    @staticmethod
    def forward(ctx, x, linear_operator, transpose):
        ctx.linear_operator, ctx.transpose = linear_operator, transpose
        # any leading shape: a single vector (n,) is one row; matmat needs a 2-D block
        rows = x.detach().cpu().to(torch.float64).reshape(-1, x.shape[-1]).numpy().T
        out = linear_operator.rmatmat(rows) if transpose else linear_operator.matmat(rows)
        out = torch.as_tensor(np.asarray(out).T.copy(), dtype=x.dtype, device=x.device)
        return out.reshape(x.shape[:-1] + out.shape[-1:])

    @staticmethod
    def backward(ctx, grad):
        back = _ScipyLinearOperatorFunction.apply(grad, ctx.linear_operator, not ctx.transpose)
        return back, None, None


class CallableOperator(Operator):
    """A matrix-free operator from two torch callables on row batches.

    Args:
        apply: ``x (batch, n) -> A x (batch, m)``, written with differentiable torch operations.
        adjoint: ``y (batch, m) -> A^T y (batch, n)``.
        shape: ``(m, n)``.
        eigenvalues: optional spectrum of :math:`A^\\top A` (enables Chebyshev initial steps,
            the expected-loss trainer and the spectral-radius log).

    >>> op = CallableOperator(lambda x: 2 * x, lambda y: 2 * y, (3, 3))
    >>> op.adjoint(torch.ones(1, 3)).tolist()
    [[2.0, 2.0, 2.0]]
    """

    def __init__(
        self,
        apply: Callable[[torch.Tensor], torch.Tensor],
        adjoint: Callable[[torch.Tensor], torch.Tensor],
        shape: tuple[int, int],
        *,
        eigenvalues=None,
    ):
        super().__init__()
        for name, func in (("apply", apply), ("adjoint", adjoint)):
            if not callable(func):
                raise TypeError(f"{name} must be callable, got {describe(func)}")
        if not isinstance(shape, (tuple, list)) or len(shape) != 2:
            raise ValueError(f"shape must be a pair (m, n), got {describe(shape)}")
        self.m = check_int(shape[0], "shape[0]", low=1)
        self.n = check_int(shape[1], "shape[1]", low=1)
        self._apply, self._adjoint = apply, adjoint
        self._eigenvalues = None
        if eigenvalues is not None:
            self._eigenvalues = np.sort(
                checked_array(eigenvalues, "eigenvalues", shape=(self.n,))
            )
        self._identity = f"callable:{id(apply):x}:{id(adjoint):x}:{self.m}x{self.n}"

    def apply(self, x):
        return self._apply(x)

    def adjoint(self, y):
        return self._adjoint(y)

    def gram_eigenvalues(self):
        return self._eigenvalues

    def fingerprint(self):
        if self._eigenvalues is not None:
            return f"callable:{self.m}x{self.n}:" + _hash_array(self._eigenvalues)
        return f"callable:{self.m}x{self.n}"

    def extra_repr(self):
        return f"m={self.m}, n={self.n}"


def _from_linear_operator(linear_operator) -> CallableOperator:
    dtype = getattr(linear_operator, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "fiub":
        raise TypeError(f"operator must be real, got a {type(linear_operator).__name__} of dtype "
                        f"{np.dtype(dtype)}")
    m, n = (int(s) for s in linear_operator.shape)
    return CallableOperator(
        lambda x: _ScipyLinearOperatorFunction.apply(x, linear_operator, False),
        lambda y: _ScipyLinearOperatorFunction.apply(y, linear_operator, True),
        (m, n),
    )


def as_operator(operator, *, dtype: torch.dtype | None = None) -> Operator:
    """Turn ``operator`` into an :class:`Operator`.

    Accepts an :class:`Operator` (returned as is), a dense 2-D numpy array or torch tensor
    ``A`` of shape ``(m, n)``, or an object with ``shape``, ``matmat`` and ``rmatmat`` (a
    ``scipy.sparse.linalg.LinearOperator`` or a scipy sparse matrix; applied on the CPU in
    float64, differentiable through its adjoint).

    >>> as_operator(np.eye(3)).n
    3
    """
    if isinstance(operator, Operator):
        return operator
    refuse_meta(operator, "operator")
    if isinstance(operator, (np.ndarray, torch.Tensor, list)):
        return DenseOperator(operator, dtype=dtype)
    if all(hasattr(operator, attr) for attr in ("shape", "matmat", "rmatmat")):
        return _from_linear_operator(operator)
    if hasattr(operator, "shape") and hasattr(operator, "T") and hasattr(operator, "__matmul__"):
        from scipy.sparse.linalg import aslinearoperator

        return _from_linear_operator(aslinearoperator(operator))
    raise TypeError(
        "operator must be a dense matrix, a scipy LinearOperator, or a stepsize.unfolding "
        f"Operator (DiagonalOperator, CallableOperator), got {describe(operator)}"
    )


def gram_matrix(operator, *, block: int = 256) -> np.ndarray:
    r"""The Gram matrix :math:`W = A^\top A` (n x n, float64) of any operator.

    A dense matrix gives ``A.T @ A`` in float64; a diagonal operator ``diag(lambda)``; any other
    operator (sparse, ``LinearOperator``, callable) is applied to the rows of the identity in
    blocks of ``block`` rows (n applications of A and of A^T in all), so it costs n matvecs and
    O(n^2) memory. The result is symmetrized.

    Args:
        operator: anything :func:`as_operator` accepts.
        block: rows of the identity per application.

    Returns:
        float64 array of shape ``(n, n)``.

    >>> gram_matrix(np.array([[1.0, 0.0], [1.0, 2.0]])).tolist()
    [[2.0, 2.0], [2.0, 4.0]]
    """
    operator = as_operator(operator)
    block = check_int(block, "block", low=1)
    if isinstance(operator, DenseOperator):
        matrix = operator.matrix.detach().cpu().to(torch.float64).numpy()
        return matrix.T @ matrix
    if isinstance(operator, DiagonalOperator):
        return np.diag(operator.eigenvalues.detach().cpu().to(torch.float64).numpy())
    reference = operator.reference()
    dtype = reference.dtype if reference is not None else torch.float64
    device = reference.device if reference is not None else None
    n, rows = operator.n, []
    with torch.no_grad():
        for start in range(0, n, block):
            stop = min(start + block, n)
            probe = torch.zeros(stop - start, n, dtype=dtype, device=device)
            probe[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            image = operator.adjoint(operator.apply(probe))
            rows.append(image.detach().cpu().to(torch.float64).numpy())
    gram = np.vstack(rows)
    return 0.5 * (gram + gram.T)
