"""Shared settings of the quantization tests: one torch thread, deterministic seeds."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
