r"""Training the unfolded steps: incremental (layer-wise), expected loss, non-incremental control.

**Incremental training** (the paper's procedure). Generation :math:`g = 1, \dots, G` trains the
first :math:`\min(g, T)` layers on fresh minibatches, with one optimizer (Adam by default) over
all T parameters; the parameters of layers not yet used get zero gradient, and the optimizer
state carries over between generations. With ``incremental=False`` every generation trains all
T layers instead (the control: from a constant initial value every step gets the same gradient,
so the steps stay equal forever; that is the symmetry trap the incremental schedule escapes).

**Expected loss.** For :math:`x^* \sim N(0, I)`, :math:`x_0 = 0` and noiseless data, the error
after g layers is :math:`e_g = \prod_{t<g} (I - |\gamma_t| A^\top A)\, x^*`, so the minibatch MSE
is an unbiased estimate of the population loss

.. math::

    L_g(\gamma) = \frac1n \sum_{i=1}^n \prod_{t<g} (1 - |\gamma_t| \lambda_i)^2,

with :math:`\lambda_i` the eigenvalues of :math:`A^\top A`. Training on :math:`L_g` directly
(float64, O(gn) per step) reproduces the notebook's minibatch training in about a second.

Checkpoints are written after every generation through :mod:`stepsize._checkpoint`
(``weights_only`` loading, a content hash, atomic writes) and ``resume=True`` continues from the
last one: parameters, optimizer state, the ``torch.Generator`` state and the history are
restored, so a resumed run equals an uninterrupted one bit for bit. The checkpoint records the
model, its operator (data hash and its response to a fixed probe), the initial steps, the seed and
every training setting, and refuses to resume a run that differs in any of them.

Reference: S. Takabe and T. Wadayama, arXiv:2001.05142 (incremental training, Section 2);
notebook ``DUGD_LMS_example.ipynb`` in github.com/wadayama/Chebyshev.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stepsize._checkpoint import (
    check_checkpoint_path,
    fingerprint,
    load_checkpoint,
    restoring,
    save_checkpoint,
)
from stepsize._progress import progress_bar
from stepsize._validation import check_choice, check_int, check_real, describe
from stepsize.chebyshev import contraction_factor
from stepsize.unfolding.models import UnfoldedGD, UnfoldedPSOR

__all__ = ["TrainingResult", "train_expected_loss", "train_incremental"]

_CHECKPOINT_KIND = "stepsize.unfolding"
_HINTS = {
    "initial_parameter": " (resume with a freshly built model: this one's steps differ from the "
    "initial steps of that run, e.g. because it was already trained)",
}
_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class TrainingResult:
    """Outcome of a training run.

    Attributes:
        steps: the learned effective steps (``|gamma|`` for DUGD, ``omega`` for PSOR), layer
            order, float64 numpy array of length T.
        generation_loss: the training loss of the last optimizer step of each generation (the
            value the notebook prints).
        spectral_radius: per generation, :math:`\\rho(Q_g) = \\max_i |\\prod_{t<g}(1 -
            \\gamma_t \\lambda_i)|` of the layers trained so far (None when the spectrum is
            unknown).
        generations: generations completed.
        wall_time_s: training time in seconds, summed over resumed sessions.
        resumed_from: generation restored from the checkpoint (0 for a fresh run).
    """

    steps: np.ndarray
    generation_loss: list[float]
    spectral_radius: list[float] | None
    generations: int
    wall_time_s: float
    resumed_from: int = 0


def _expected_loss(gammas: torch.Tensor, eigenvalues: torch.Tensor, n_layers: int):
    factors = 1.0 - gammas[:n_layers, None].abs().to(eigenvalues.dtype) * eigenvalues[None, :]
    return factors.prod(dim=0).square().mean()


def _generator(seed) -> tuple[torch.Generator, str]:
    """A torch.Generator from an int, a Generator (used in place) or None, and its description."""
    if isinstance(seed, torch.Generator):
        return seed, "generator:" + fingerprint(seed.get_state())
    if seed is None:
        generator = torch.Generator()
        generator.seed()
        return generator, "random"
    seed = check_int(seed, "seed", low=0)
    return torch.Generator().manual_seed(seed), f"seed:{seed}"


def _learned_parameter(model) -> torch.nn.Parameter:
    if isinstance(model, UnfoldedGD):
        return model.steps
    if isinstance(model, UnfoldedPSOR):
        return model.omegas
    raise TypeError(f"model must be an UnfoldedGD or UnfoldedPSOR, got {describe(model)}")


def _effective(model) -> np.ndarray:
    parameter = _learned_parameter(model).detach().cpu().to(torch.float64)
    return (parameter.abs() if isinstance(model, UnfoldedGD) else parameter).numpy()


@dataclass
class _History:
    generation_loss: list
    spectral_radius: list | None
    wall_time_s: float = 0.0


def _run_generations(
    model,
    loss_of: Callable[[int], torch.Tensor],
    *,
    config: dict,
    generations: int,
    steps_per_generation: int,
    lr: float,
    optimizer: str,
    incremental: bool,
    checkpoint: Path | None,
    resume: bool,
    progress: bool | None,
    callback: Callable[[int, float], None] | None,
    generator: torch.Generator | None,
    eigenvalues: np.ndarray | None,
) -> TrainingResult:
    """The loop shared by both trainers: generations, checkpoints, resume, progress."""
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {describe(resume)}")
    parameter = _learned_parameter(model)
    opt = _OPTIMIZERS[optimizer]([parameter], lr=lr)
    history = _History([], [] if eigenvalues is not None else None)
    start = 0
    if checkpoint is not None and resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, kind=_CHECKPOINT_KIND, settings=config, hints=_HINTS)
        with restoring(checkpoint):
            with torch.no_grad():
                parameter.copy_(state["parameter"].to(parameter))
            opt.load_state_dict(state["optimizer"])
            if generator is not None:
                generator.set_state(state["generator"])
            history = _History(**state["history"])
            start = int(state["generation"])
    resumed_from = start
    bar = progress_bar(
        range(start, generations), progress=progress, total=generations, initial=start,
        desc=f"{type(model).__name__} generations",
    )
    for generation in bar:
        began = time.perf_counter()
        n_layers = min(generation + 1, model.T) if incremental else model.T
        for _ in range(steps_per_generation):
            opt.zero_grad(set_to_none=True)
            loss = loss_of(n_layers)
            loss.backward()
            opt.step()
        last_loss = float(loss.detach())
        if not np.isfinite(last_loss):
            # stop before the checkpoint, which keeps the last finite generation
            raise FloatingPointError(
                f"training diverged in generation {generation + 1}: the loss is {last_loss}; "
                f"lower lr (now {lr})"
            )
        history.generation_loss.append(last_loss)
        if history.spectral_radius is not None:
            trained = _effective(model)[:n_layers]
            history.spectral_radius.append(contraction_factor(trained, eigenvalues))
        history.wall_time_s += time.perf_counter() - began
        bar.set_postfix(loss=f"{last_loss:.3e}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, kind=_CHECKPOINT_KIND, settings=config, state={
                "generation": generation + 1,
                "parameter": parameter.detach().cpu().clone(),
                "optimizer": opt.state_dict(),
                "generator": generator.get_state() if generator is not None else None,
                "history": vars(history),
            })
        if callback is not None:
            callback(generation + 1, last_loss)
    bar.close()
    return TrainingResult(
        steps=_effective(model),
        generation_loss=list(history.generation_loss),
        spectral_radius=None if history.spectral_radius is None else list(history.spectral_radius),
        generations=generations,
        wall_time_s=history.wall_time_s,
        resumed_from=resumed_from,
    )


def _operator_fingerprint(model) -> str:
    """The operator's own fingerprint (data hash) or the fixed point, with the response of the
    map the training unrolls (A^T A for DUGD, the fixed-point map for PSOR) to a fixed probe, so
    that callable operators and maps are told apart too."""
    parameter = _learned_parameter(model)
    if isinstance(model, UnfoldedGD):
        n, label = model.operator.n, model.operator.fingerprint()
    else:
        n, label = model.fixed_point.shape[0], "psor:" + fingerprint(model.fixed_point)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, n, generator=generator, dtype=parameter.dtype).to(parameter.device)
    with torch.no_grad():
        if isinstance(model, UnfoldedGD):
            response = model.operator.adjoint(model.operator.apply(probe))
        else:
            response = model.fixed_point_map(probe)
    return f"{label}:{fingerprint(response)}"


def _common_config(model, kind, generations, steps_per_generation, lr, optimizer, incremental):
    parameter = _learned_parameter(model)
    generations = model.T if generations is None else check_int(generations, "generations", low=1)
    steps_per_generation = check_int(steps_per_generation, "steps_per_generation", low=1)
    lr = check_real(lr, "lr", low=0, low_inclusive=False)
    check_choice(optimizer, "optimizer", tuple(_OPTIMIZERS))
    if not isinstance(incremental, bool):
        raise TypeError(f"incremental must be a bool, got {describe(incremental)}")
    config = {
        "trainer": kind,
        "model": type(model).__name__,
        "T": model.T,
        "operator": _operator_fingerprint(model),
        "initial_parameter": fingerprint(parameter),
        "dtype": str(parameter.dtype),
        "generations": generations,
        "steps_per_generation": steps_per_generation,
        "lr": lr,
        "optimizer": optimizer,
        "incremental": incremental,
    }
    return config, generations, steps_per_generation, lr


def train_incremental(
    model,
    *,
    batch_size: int = 10000,
    steps_per_generation: int = 500,
    lr: float = 0.002,
    generations: int | None = None,
    incremental: bool = True,
    optimizer: str = "adam",
    seed: int | torch.Generator | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    r"""Stochastic incremental training of an :class:`UnfoldedGD` or :class:`UnfoldedPSOR`.

    Generation g minimizes the minibatch MSE :math:`\tfrac{1}{bn}\|x_g - x^*\|_F^2` of the first
    :math:`\min(g, T)` layers (all T with ``incremental=False``) over ``steps_per_generation``
    fresh minibatches. DUGD draws :math:`x^* \sim N(0, I)`, :math:`y = A x^*`; PSOR draws
    :math:`x_0 \sim N(x^*, I)`. The model is trained in place.

    Args:
        model: the module to train.
        batch_size: minibatch size (the notebook's effective value is 10000).
        steps_per_generation: optimizer steps per generation (the notebook: 500).
        lr: learning rate (the notebook: Adam, 0.002).
        generations: number of generations (default T).
        incremental: False trains all layers in every generation (the control).
        optimizer: ``"adam"`` (default, betas (0.9, 0.999), eps 1e-8) or ``"sgd"``.
        seed: int, ``torch.Generator`` (advanced in place) or None.
        checkpoint: file written after every generation; None for no checkpoint.
        resume: continue from ``checkpoint`` if it exists (it must come from the same
            configuration: model, operator, initial steps, seed and every setting above).
        progress: progress bar (None: only on a terminal).
        callback: ``callback(generation, loss)`` after each generation's checkpoint.

    Returns:
        :class:`TrainingResult`.

    >>> model = UnfoldedGD(2, np.diag([1.0, 2.0]), init=0.3)
    >>> result = train_incremental(model, batch_size=64, steps_per_generation=50, lr=0.05,
    ...                            seed=0, progress=False)
    >>> len(result.generation_loss)
    2
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    config, generations, steps_per_generation, lr = _common_config(
        model, "incremental", generations, steps_per_generation, lr, optimizer, incremental
    )
    checkpoint = check_checkpoint_path(checkpoint)
    generator, seed_description = _generator(seed)
    config.update(batch_size=batch_size, seed=seed_description)
    eigenvalues = model.operator.gram_eigenvalues() if isinstance(model, UnfoldedGD) else None
    def loss_of(n_layers: int) -> torch.Tensor:
        return model._training_loss(batch_size, generator, n_layers)

    return _run_generations(
        model, loss_of, config=config, generations=generations,
        steps_per_generation=steps_per_generation, lr=lr, optimizer=optimizer,
        incremental=incremental, checkpoint=checkpoint, resume=resume, progress=progress,
        callback=callback, generator=generator, eigenvalues=eigenvalues,
    )


def train_expected_loss(
    model: UnfoldedGD,
    *,
    steps_per_generation: int = 500,
    lr: float = 0.002,
    generations: int | None = None,
    incremental: bool = True,
    optimizer: str = "adam",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    r"""Train an :class:`UnfoldedGD` on the exact population loss (deterministic, float64).

    Generation g minimizes :math:`L_g(\gamma) = \tfrac1n \sum_i \prod_{t<\min(g,T)}
    (1 - |\gamma_t| \lambda_i)^2` (all T layers with ``incremental=False``), the expectation of
    the notebook's minibatch loss, with the eigenvalues of :math:`A^\top A` from the model's
    operator. Same schedule, optimizer, checkpoints and resume as :func:`train_incremental`.

    Args:
        model: an :class:`UnfoldedGD` whose operator knows its spectrum (dense, diagonal, or a
            :class:`CallableOperator` given ``eigenvalues``).
        steps_per_generation, lr, generations, incremental, optimizer, checkpoint, resume,
        progress, callback: as in :func:`train_incremental`.

    Returns:
        :class:`TrainingResult`; its ``generation_loss`` values are exact expected losses.

    >>> model = UnfoldedGD(1, np.diag([1.0, 1.0]), init=0.3)
    >>> result = train_expected_loss(model, steps_per_generation=200, lr=0.05, progress=False)
    >>> round(float(result.steps[0]), 3)
    1.0
    """
    if not isinstance(model, UnfoldedGD):
        raise TypeError(f"model must be an UnfoldedGD, got {describe(model)}")
    config, generations, steps_per_generation, lr = _common_config(
        model, "expected_loss", generations, steps_per_generation, lr, optimizer, incremental
    )
    checkpoint = check_checkpoint_path(checkpoint)
    eigenvalues = model._require_eigenvalues("train_expected_loss")
    spectrum = torch.as_tensor(eigenvalues, dtype=torch.float64, device=model.steps.device)

    def loss_of(n_layers: int) -> torch.Tensor:
        return _expected_loss(model.steps, spectrum, n_layers)

    return _run_generations(
        model, loss_of, config=config, generations=generations,
        steps_per_generation=steps_per_generation, lr=lr, optimizer=optimizer,
        incremental=incremental, checkpoint=checkpoint, resume=resume, progress=progress,
        callback=callback, generator=None, eigenvalues=eigenvalues,
    )
