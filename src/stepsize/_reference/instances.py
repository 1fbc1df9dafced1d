"""Problem instances of the papers, generated exactly as the authors' notebooks do.

Shared by experiments and benchmarks so that every table is computed on the same matrices.
"""

from __future__ import annotations

import numpy as np


def gaussian_gram(n: int = 300, m: int = 600, seed: int = 12) -> np.ndarray:
    """``H H^T`` for ``H ~ N(0, 1/n)`` of shape (n, m), drawn with numpy's legacy RNG.

    With the defaults this is the ``A^T A`` of Takabe & Wadayama's (n, m) = (300, 600) instance
    (``DUGD_LMS_example.ipynb``): lmin 0.184191, lmax 5.678371. ``(300, 450, 32)`` gives the
    ``CHGD_MSE.ipynb`` instance (lmin 0.055996, lmax 4.933429).
    """
    state = np.random.RandomState(seed)
    H = state.normal(0.0, 1.0 / np.sqrt(n), (n, m))
    return H @ H.T


def gaussian_operator(n: int = 300, m: int = 600, seed: int = 12) -> np.ndarray:
    """The ``A = H^T`` (m x n) of :func:`gaussian_gram`, for least-squares formulations."""
    state = np.random.RandomState(seed)
    return state.normal(0.0, 1.0 / np.sqrt(n), (n, m)).T


def jacobi_instance(n: int = 512, seed: int = 0) -> np.ndarray:
    """``P = I + M^T M`` with ``M ~ N(0, 0.03^2)`` (n x n) drawn by torch, as ``Jacobi.ipynb``.

    Uses ``torch.manual_seed(seed)`` and ``torch.normal`` when torch is installed, reproducing the
    notebook's spectrum of ``D^{-1} P`` ([0.6766, 1.9216]); numpy's generator otherwise.
    """
    try:
        import torch
    except ImportError:
        M = np.random.default_rng(seed).normal(0.0, 0.03, (n, n))
    else:
        generator = torch.Generator().manual_seed(seed)
        M = torch.normal(0.0, 0.03, (n, n), generator=generator).double().numpy()
    return np.eye(n) + M.T @ M
