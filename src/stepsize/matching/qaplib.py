"""QAPLIB instances: the standard benchmark of the quadratic assignment problem.

A QAPLIB ``.dat`` file holds ``n``, then the n x n flow matrix ``A``, then the n x n distance
matrix ``B``, whitespace separated. The problem is the minimization

    min_p sum_ik A[i, k] B[p(i), p(k)]

over permutations ``p``: ``match_graphs(A, B, maximize=False)``, or
``scipy.optimize.quadratic_assignment(A, B)``, with ``col_ind = p``. A ``solutions.csv`` lists
``name, n, best_known_value, permutation_0based``.

Reference: Burkard, Karisch, Rendl, "QAPLIB - A quadratic assignment problem library",
J. Global Optimization 10 (1997).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["QAPInstance", "read_qaplib", "read_qaplib_solutions"]


@dataclass(frozen=True)
class QAPInstance:
    """A QAPLIB instance.

    Attributes:
        name: the file name without ``.dat``.
        A: flows (n x n).
        B: distances (n x n).
    """

    name: str
    A: np.ndarray
    B: np.ndarray

    @property
    def n(self) -> int:
        """Number of facilities (and locations)."""
        return self.A.shape[0]


def read_qaplib(path: str | os.PathLike) -> QAPInstance:
    """Read a QAPLIB ``.dat`` file.

    Args:
        path: the file.

    Returns:
        A :class:`QAPInstance`.

    Raises:
        ValueError: the file does not hold ``n`` and two n x n matrices of numbers.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
    ...     _ = f.write("2\\n0 3\\n1 0\\n\\n0 5\\n2 0\\n")
    >>> instance = read_qaplib(f.name)
    >>> instance.n, instance.A.tolist(), instance.B.tolist()
    (2, [[0.0, 3.0], [1.0, 0.0]], [[0.0, 5.0], [2.0, 0.0]])
    """
    path = Path(path)
    tokens = path.read_text().split()
    try:
        n = int(tokens[0])
        values = np.array(tokens[1:], dtype=np.float64)
    except (IndexError, ValueError):
        raise ValueError(f"{path}: not a QAPLIB file (n, then two n x n matrices)") from None
    if n < 1 or values.size != 2 * n * n:
        raise ValueError(f"{path}: expected 2 x {n}^2 = {2 * n * n} numbers after n = {n}, "
                         f"got {values.size}")
    return QAPInstance(path.stem, values[: n * n].reshape(n, n), values[n * n:].reshape(n, n))


def read_qaplib_solutions(path: str | os.PathLike) -> dict[str, float]:
    """Best-known (or proven optimal) values of ``solutions.csv``, by instance name.

    Args:
        path: the CSV file, with columns ``name`` and ``best_known_value``.

    Returns:
        ``{name: value}``.
    """
    with open(path, newline="") as handle:
        return {row["name"]: float(row["best_known_value"]) for row in csv.DictReader(handle)}
