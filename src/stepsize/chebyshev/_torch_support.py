r"""Gradients through a solve and batches of systems, for the torch inputs of the solvers.

**Implicit differentiation.** For :math:`x = W^{-1} c` and a loss gradient :math:`g = \partial L /
\partial x`, the adjoint :math:`a = W^{-\top} g = W^{-1} g` (W is symmetric) gives

.. math::

    \frac{\partial L}{\partial c} = a, \qquad \frac{\partial L}{\partial W} = -a x^\top,

the gradient of the exact solution, as ``torch.linalg.solve`` returns it. The forward solve runs
without building a graph, and the backward pass is one more solve with the same solver and
options, so memory does not grow with the iteration count (unrolling would keep every iterate).
The gradient is that of the exact solution: accurate to about ``tol`` when a tolerance is met.

**Batches** (without gradients). A torch ``W`` of shape (b, n, n) with ``c`` of shape (b, n) or
(b, n, k) is solved as one system of b k columns: each column is multiplied by its own matrix, and
the Chebyshev interval covers the union of the b spectra (the CG estimate takes the extreme Ritz
values over columns).
"""

from __future__ import annotations

import functools

from stepsize.chebyshev._backend import is_torch as _is_torch

__all__ = ["torch_extensions"]


class BatchedMatrices:
    """b matrices acting on an (n, b k) block of columns, column block i by matrix i."""

    def __init__(self, W, k: int):
        self.W = W
        self.k = k
        self.shape = (W.shape[1], W.shape[2])
        self.dtype = W.dtype
        self.ndim = 2

    def _split(self, X):
        b, n = self.W.shape[0], self.shape[0]
        return X.reshape(n, b, self.k).permute(1, 0, 2)

    def _join(self, Y):
        return Y.permute(1, 0, 2).reshape(self.shape[0], -1)

    def __matmul__(self, X):
        return self._join(self.W @ self._split(X))

    def jacobi(self):
        """The inverse diagonals, laid out like the columns."""
        import torch

        diagonal = torch.diagonal(self.W, dim1=1, dim2=2)  # (b, n)
        smallest = float(diagonal.min())
        if not smallest > 0:
            raise ValueError(f"M='jacobi' needs a positive diagonal of every W, got min "
                             f"{smallest:.3g}")
        inverse = self._join((1 / diagonal).unsqueeze(-1).expand(-1, -1, self.k))
        return lambda r: r * inverse


def _batched(solver, W, c, args, options):
    import torch

    if W.ndim != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"a batch W must have shape (b, n, n), got {tuple(W.shape)}")
    if not _is_torch(c) or c.ndim not in (2, 3) or tuple(c.shape[:2]) != tuple(W.shape[:2]):
        raise ValueError(f"with W of shape {tuple(W.shape)}, c must be a tensor of shape "
                         f"{tuple(W.shape[:2])} or {tuple(W.shape[:2])} + (k,), got "
                         f"{tuple(getattr(c, 'shape', ()))}")
    for name in ("x0", "x_true"):
        if options.get(name) is not None:
            raise ValueError(f"{name} is not supported with a batch W (b, n, n)")
    gap = float((W - W.transpose(1, 2)).abs().max())
    if gap > 1e-6 * max(float(W.abs().max()), 1e-300):
        raise ValueError(f"every W in the batch must be symmetric: max |W - W^T| = {gap:.3g}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W must be finite, but it has NaN or infinite entries")
    if getattr(options.get("options"), "mixed_precision", False):
        raise ValueError("mixed_precision is not supported with a batch W (b, n, n)")
    squeeze = c.ndim == 2
    C = c.unsqueeze(-1) if squeeze else c
    operator = BatchedMatrices(W, C.shape[2])
    M = options.get("M")
    if isinstance(M, str) and M == "jacobi":
        options = {**options, "M": operator.jacobi()}
    elif M is not None:
        raise ValueError("with a batch W (b, n, n), M must be None or 'jacobi'")
    result = solver(operator, operator._join(C), *args, **options)
    x = operator._split(result.x)
    result.x = x.squeeze(-1) if squeeze else x
    return result


@functools.cache
def _solve_function():
    """The autograd Function of implicit differentiation (built once, on first use)."""
    import torch

    class ImplicitSolve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W, c, x, adjoint):
            ctx.save_for_backward(x)
            ctx.adjoint = adjoint
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            a = ctx.adjoint(grad.contiguous())
            grad_W = None
            if ctx.needs_input_grad[0]:
                grad_W = -(torch.outer(a, x) if x.ndim == 1 else a @ x.T)
            return grad_W, a, None, None

    return ImplicitSolve


def _differentiated(solver, W, c, args, options):
    import torch

    if not _is_torch(W) or W.ndim != 2:
        raise TypeError("gradients flow through a dense torch W (n, n) and c; got "
                        f"{type(W).__name__}")
    with torch.no_grad():
        result = solver(W.detach(), c.detach(), *args, **options)
    adjoint_options = {key: value for key, value in options.items()
                       if key not in ("x0", "x_true", "history")}
    detached = W.detach()

    def adjoint(grad):
        with torch.no_grad():
            return solver(detached, grad, *args, **adjoint_options).x

    result.x = _solve_function().apply(W, c, result.x, adjoint)
    return result


def torch_extensions(solver):
    """Wrap ``solver(W, c, ...)``: batches of torch systems and gradients through the solve."""

    @functools.wraps(solver)
    def wrapper(W, c, *args, **options):
        if not _is_torch(W) and not _is_torch(c):
            return solver(W, c, *args, **options)
        if _is_torch(W) and W.ndim == 3:
            if any(getattr(value, "requires_grad", False) for value in (W, c)):
                raise TypeError("gradients through a batch W (b, n, n) are not supported; solve "
                                "each system (n, n) with requires_grad, or detach W and c")
            return _batched(wrapper, W, c, args, options)
        if any(getattr(value, "requires_grad", False) for value in (W, c)):
            return _differentiated(solver, W, c, args, options)
        return solver(W, c, *args, **options)

    return wrapper
