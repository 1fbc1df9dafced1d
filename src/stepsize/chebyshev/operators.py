r"""The normal equations of least squares as an operator the solvers accept, never formed.

:math:`\min_x \|A x - y\|` is solved by :math:`A^\top A x = A^\top y`; :class:`NormalOperator`
applies :math:`A^\top (A x)` with two products, so its conditioning is that of
:math:`A^\top A` but its cost and memory are those of A.
"""

from __future__ import annotations

import scipy.sparse as sp
import scipy.sparse.linalg as spla

from stepsize._validation import check_array
from stepsize.chebyshev._backend import is_torch

__all__ = ["NormalOperator", "normal_equations"]


class NormalOperator:
    r"""The operator :math:`x \mapsto A^\top (A x)` of the normal equations, never formed.

    Works for dense numpy arrays, scipy sparse matrices, LinearOperators and torch tensors.

    >>> import numpy as np
    >>> W = NormalOperator(np.array([[1.0, 2.0], [0.0, 1.0]]))
    >>> W.shape, (W @ np.ones(2)).tolist()
    ((2, 2), [3.0, 7.0])
    """

    def __init__(self, A):
        if is_torch(A):
            if A.ndim != 2:
                raise ValueError(f"A must be a matrix, got shape {tuple(A.shape)}")
        elif not (isinstance(A, spla.LinearOperator) or sp.issparse(A)):
            A = check_array(A, "A", ndim=2, dtype=None)
        self.A = A
        self.shape = (A.shape[1], A.shape[1])
        self.dtype = A.dtype

    def __matmul__(self, x):
        return self.A.T @ (self.A @ x)


def normal_equations(A, y) -> tuple[NormalOperator, object]:
    r"""``(W, c)`` with :math:`W = A^\top A` (as an operator) and :math:`c = A^\top y`.

    Args:
        A: the (m, n) matrix: dense, sparse, LinearOperator or torch tensor.
        y: the observations, shape (m,) or (m, k).

    Returns:
        The :class:`NormalOperator` W and the right-hand side c, for any solver here.

    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    >>> W, c = normal_equations(A, np.array([1.0, 2.0, 3.0]))
    >>> (W @ np.ones(2)).tolist(), c.tolist()
    ([1.0, 4.0], [1.0, 4.0])
    """
    W = NormalOperator(A)
    if not is_torch(y):
        y = check_array(y, "y", ndim=(1, 2), dtype=None)
    if y.shape[0] != W.A.shape[0]:
        raise ValueError(f"y must have {W.A.shape[0]} rows to match A, got shape {tuple(y.shape)}")
    return W, W.A.T @ y
