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


_TORCHVISION_LIBRARY = []  # keeps the torch.library fragment alive for the whole session


def import_torchvision():
    """``torchvision.models``, or skip the test when torchvision is not installed.

    The torchvision 0.28.0 wheel is built against a CUDA torch; its compiled ops do not load
    against the CPU torch 2.13.0 used here, and ``import torchvision`` then fails with
    "operator torchvision::nms does not exist" (its ``meta_registrations`` register fake kernels
    for ``nms`` and ``qnms``, whose schemas the compiled library would have defined). The model
    definitions are pure Python, so this helper defines the two missing schemas (the signatures
    of torchvision's ``csrc/ops/nms.cpp``) with ``torch.library`` before the import. No
    detection op is ever called by these tests. The library itself never imports torchvision.
    """
    import importlib.util
    import sys

    try:
        missing = sys.modules.get("torchvision", False) is None or \
            importlib.util.find_spec("torchvision") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        pytest.skip("torchvision is not installed (pip install -c constraints.txt "
                    "torchvision==0.28.0)")
    try:
        import torchvision.models as models

        return models
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialized modules behind
    if not _TORCHVISION_LIBRARY:
        library = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
        _TORCHVISION_LIBRARY.append(library)
    import torchvision.models as models

    return models


@pytest.fixture
def torchvision_models():
    """``torchvision.models`` through :func:`import_torchvision` (skips without torchvision)."""
    return import_torchvision()
