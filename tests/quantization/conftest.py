"""Shared settings of the quantization tests: one torch thread, deterministic seeds, and the one
helper that imports torchvision (:func:`import_torchvision`, given to tests as the
``torchvision_models`` fixture: test modules cannot import from a conftest by name, since several
test folders have one)."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


def import_torchvision():
    """``torchvision.models``, or skip the test when torchvision is not installed.

    The import goes through :func:`stepsize.benchmarks.lsq.torchvision_models`, the one
    documented helper that registers the two operator schemas (``nms``, ``qnms``) the
    torchvision 0.28.0 wheel's compiled library would define, so that its pure-Python model
    definitions import against the CPU build of torch. The library itself never imports
    torchvision.
    """
    from stepsize.benchmarks.lsq import torchvision_models

    try:
        return torchvision_models()
    except ImportError as error:
        pytest.skip(str(error))


@pytest.fixture
def torchvision_models():
    """``torchvision.models`` through :func:`import_torchvision` (skips without torchvision)."""
    return import_torchvision()
