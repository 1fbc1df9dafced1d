"""Shared fixtures for the unfolding tests: one torch thread, the notebook's seed-12 instance."""

import contextlib

import numpy as np
import pytest

from stepsize._reference.instances import gaussian_operator

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def notebook_matrix():
    """``A`` (600 x 300) of DUGD_LMS_example.ipynb: numpy legacy seed 12, ``H`` is ``A.T``."""
    return np.ascontiguousarray(gaussian_operator(300, 600, 12))


def _two_blas_threads():
    """numpy's BLAS/LAPACK pinned to 2 threads. ``eigvalsh`` of the seed-12 Gram matrix differs
    in its last bits between 1 and 2 BLAS threads, and late DUGD generations amplify that (final
    loss 4.6e-7 vs 3.8e-7): pinning makes the oracle tests independent of OMP_NUM_THREADS
    (threadpoolctl raises the limit above an OMP_NUM_THREADS=1 start, checked bit for bit)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(2)


@pytest.fixture(scope="session")
def two_blas_threads():
    """A context manager factory: ``with two_blas_threads(): ...`` (see _two_blas_threads)."""
    return _two_blas_threads


@pytest.fixture(scope="session")
def notebook_eigenvalues(notebook_matrix):
    with _two_blas_threads():
        return np.linalg.eigvalsh(notebook_matrix.T @ notebook_matrix)
