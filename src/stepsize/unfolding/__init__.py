"""Learned step sizes: deep-unfolded gradient descent and PSOR in torch, with training loops.

Needs the ``torch`` extra. Reference: S. Takabe and T. Wadayama, "Theoretical Interpretation of
Learned Step Size in Deep-Unfolded Gradient Descent", arXiv:2001.05142, and arXiv:2010.13335.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "stepsize.unfolding needs PyTorch, which is not installed; install the extra with "
        "pip install 'stepsize[torch]'"
    ) from exc

from stepsize.unfolding.models import UnfoldedGD, UnfoldedISTA, UnfoldedPSOR, soft_threshold
from stepsize.unfolding.operators import (
    CallableOperator,
    DenseOperator,
    DiagonalOperator,
    Operator,
    as_operator,
    gram_matrix,
)
from stepsize.unfolding.training import (
    TrainingProgress,
    TrainingResult,
    expected_loss,
    train_expected_loss,
    train_incremental,
)

__all__ = [
    "CallableOperator",
    "DenseOperator",
    "DiagonalOperator",
    "Operator",
    "TrainingProgress",
    "TrainingResult",
    "UnfoldedGD",
    "UnfoldedISTA",
    "UnfoldedPSOR",
    "as_operator",
    "expected_loss",
    "gram_matrix",
    "soft_threshold",
    "train_expected_loss",
    "train_incremental",
]
