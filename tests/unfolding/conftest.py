"""Shared fixtures for the unfolding tests: one torch thread, the notebook's seed-12 instance."""

import numpy as np
import pytest

from stepsize.experiments._instances import gaussian_operator

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


@pytest.fixture(scope="session")
def notebook_eigenvalues(notebook_matrix):
    return np.linalg.eigvalsh(notebook_matrix.T @ notebook_matrix)
