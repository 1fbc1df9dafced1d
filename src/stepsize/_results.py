"""Result types and warnings shared by the solvers of every subpackage.

Every iterative solver returns a dataclass derived from :class:`SolverResult`, so the same
field names (``x``, ``n_iter``, ``converged``, ``history``, ``message``) mean the same thing
everywhere, as with scipy's ``OptimizeResult``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConvergenceWarning",
    "SolverResult",
    "TrainingProgress",
    "TrainingResult",
    "warn_not_converged",
]


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at its iteration cap before meeting its tolerance."""


@dataclass
class SolverResult:
    """Outcome of an iterative solver.

    Attributes:
        x: the final iterate (numpy array or torch tensor, as the input was).
        n_iter: iterations performed.
        converged: whether the stopping tolerance was met; None when no tolerance was tested
            (a fixed number of iterations was asked for).
        history: per-iteration diagnostics (e.g. relative residual or error), when requested.
        message: a human-readable reason for stopping.
        info: solver-specific extras (matvec counts, step sizes, ...).
    """

    x: Any
    n_iter: int
    converged: bool | None
    history: list[float] | None = None
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingResult:
    """Outcome of a training run, the same shape for every trainer.

    ``train_expected_loss`` and ``train_incremental`` (deep unfolding: a round is a generation)
    and ``train_model`` (LSQ: a round is an epoch) all return this.

    Attributes:
        losses: the training loss of each completed round (a generation's last optimizer step
            for the unfolding trainers; an epoch's mean loss for ``train_model``), resumed
            rounds included.
        rounds: rounds completed (generations or epochs), those of a resumed checkpoint
            included.
        optimizer_steps: optimizer steps taken over all rounds, resumed ones included.
        wall_time_s: training time in seconds, summed over resumed sessions.
        resumed_from: the round restored from the checkpoint (0 for a fresh run).
        checkpoint: the checkpoint file, or None.
        steps: the learned step sizes in layer order (float64 numpy array) for the unfolding
            trainers; None for ``train_model`` (its step sizes live in the model's quantizers).
        info: trainer-specific extras (e.g. ``spectral_radius`` and ``thresholds`` for deep
            unfolding).
    """

    losses: list[float]
    rounds: int
    optimizer_steps: int = 0
    wall_time_s: float = 0.0
    resumed_from: int = 0
    checkpoint: Any = None
    steps: Any = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingProgress:
    """What every trainer passes to its ``callback``, once per round, after the round's checkpoint.

    ``train_expected_loss``, ``train_incremental`` (a round is a generation) and ``train_model``
    (a round is an epoch) all call ``callback(progress)`` with this, after the round's checkpoint
    is written (when there is one): an exception raised by the callback stops training with the
    checkpoint holding exactly the state it saw, so a rerun with ``resume=True`` continues from
    there. To watch every optimizer step, register torch's own hooks on the model (e.g.
    ``model.register_forward_pre_hook``); the callback is not called between rounds' steps.

    Attributes:
        round: rounds completed so far, resumed ones included (1 after the first round).
        optimizer_steps: optimizer steps taken so far, resumed ones included.
        loss: this round's loss, the value appended to ``TrainingResult.losses``.
        model: the model being trained (the module itself, not a DDP wrapper), in its state after
            this round.

    >>> progress = TrainingProgress(round=1, optimizer_steps=500, loss=0.25, model=None)
    >>> f"round {progress.round}: loss {progress.loss:.2e} after {progress.optimizer_steps} steps"
    'round 1: loss 2.50e-01 after 500 steps'
    """

    round: int
    optimizer_steps: int
    loss: float
    model: Any


def warn_not_converged(solver: str, n_iter: int, detail: str = "", stacklevel: int = 3) -> None:
    """Emit the standard :class:`ConvergenceWarning` for ``solver``."""
    text = f"{solver} did not converge in {n_iter} iterations"
    warnings.warn(text + (f": {detail}" if detail else ""), ConvergenceWarning, stacklevel)
