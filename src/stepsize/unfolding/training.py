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
(``weights_only`` loading, a content hash, atomic writes) and ``resume=True`` (the default)
continues from the last one: parameters, optimizer state, the ``torch.Generator`` state and the
history are restored, so a resumed run equals an uninterrupted one bit for bit. The checkpoint
records the model, its operator (data hash and its response to a fixed probe), the initial steps,
the seed and every training setting, and refuses to resume a run that differs in any of them.

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
from stepsize._results import TrainingProgress, TrainingResult
from stepsize._validation import (
    check_callback,
    check_choice,
    check_int,
    check_progress,
    check_real,
    describe,
)
from stepsize.chebyshev import contraction_factor
from stepsize.unfolding.models import UnfoldedGD, UnfoldedISTA, UnfoldedPSOR
from stepsize.unfolding.operators import DiagonalOperator, checked_array, gram_matrix

__all__ = [
    "TrainingProgress",
    "TrainingResult",
    "expected_loss",
    "train_expected_loss",
    "train_incremental",
]

_CHECKPOINT_KIND = "stepsize.unfolding"
_HINTS = {
    "initial_parameter": " (resume with a freshly built model: this one's steps differ from the "
    "initial steps of that run, e.g. because it was already trained)",
}
_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def _expected_loss(
    gammas: torch.Tensor,
    eigenvalues: torch.Tensor,
    n_layers: int,
    weights: torch.Tensor | None = None,
    noise_variance: float = 0.0,
):
    """(1/n) [sum_i d_i beta_i^2 + sigma^2 sum_i lambda_i mu_i^2] (see expected_loss)."""
    gammas = gammas[:n_layers].abs().to(eigenvalues.dtype)
    factors = 1.0 - gammas[:, None] * eigenvalues[None, :]
    beta_squared = factors.prod(dim=0).square()
    loss = (beta_squared if weights is None else beta_squared * weights).mean()
    if noise_variance:
        # mu_{t+1} = (1 - gamma_t lambda) mu_t + gamma_t: the noise gain (1 - beta) / lambda,
        # without the cancellation of that quotient at small lambda (and 0/0 at lambda = 0)
        mu = torch.zeros_like(eigenvalues)
        for t in range(gammas.shape[0]):
            mu = factors[t] * mu + gammas[t]
        loss = loss + noise_variance * (eigenvalues * mu.square()).mean()
    return loss


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


def _learned_parameters(model) -> list[torch.nn.Parameter]:
    if isinstance(model, UnfoldedGD):
        return [model.steps]
    if isinstance(model, UnfoldedPSOR):
        return [model.omegas]
    if isinstance(model, UnfoldedISTA):
        return [model.steps] + ([model.thresholds] if model.thresholds is not None else [])
    raise TypeError(
        f"model must be an UnfoldedGD, UnfoldedISTA or UnfoldedPSOR, got {describe(model)}"
    )


def _effective(model) -> np.ndarray:
    parameter = _learned_parameters(model)[0].detach().cpu().to(torch.float64)
    return (parameter if isinstance(model, UnfoldedPSOR) else parameter.abs()).numpy()


def _effective_thresholds(model) -> np.ndarray | None:
    if not isinstance(model, UnfoldedISTA):
        return None
    return model.threshold_values.cpu().to(torch.float64).numpy()


@dataclass
class _History:
    generation_loss: list
    spectral_radius: list | None
    wall_time_s: float = 0.0


@dataclass
class _Loop:
    """What one training run iterates with: the learned parameters, their optimizer, the
    training generator and data source (restored together on resume)."""

    model: torch.nn.Module
    parameters: list
    optimizer: torch.optim.Optimizer
    generator: torch.Generator | None
    source: _Batches | None
    history: _History
    done: int = 0


def _restore(loop: _Loop, checkpoint: Path, config: dict, generations: int) -> None:
    """Load ``checkpoint`` into ``loop`` (parameters, optimizer, generator, data position,
    history); refuse one with more generations than asked for."""
    state = load_checkpoint(checkpoint, kind=_CHECKPOINT_KIND, settings=config, hints=_HINTS)
    done = int(state.get("generation", 0))
    if done > generations:
        raise ValueError(
            f"generations={generations} is fewer than the {done} generations already trained "
            f"in checkpoint {checkpoint}; resuming would have to undo trained layers (pass "
            f"generations >= {done}, resume=False, or another file)"
        )
    with restoring(checkpoint):
        with torch.no_grad():
            for parameter, saved in zip(loop.parameters, state["parameters"], strict=True):
                parameter.copy_(saved.to(parameter))
        loop.optimizer.load_state_dict(state["optimizer"])
        if loop.generator is not None:
            loop.generator.set_state(state["generator"])
        if loop.source is not None:
            loop.source.seek(int(state["batches"]))
        loop.history = _History(**state["history"])
        loop.done = done


def _save(loop: _Loop, checkpoint: Path, config: dict) -> None:
    save_checkpoint(checkpoint, kind=_CHECKPOINT_KIND, settings=config, state={
        "generation": loop.done,
        "parameters": [p.detach().cpu().clone() for p in loop.parameters],
        "optimizer": loop.optimizer.state_dict(),
        "generator": loop.generator.get_state() if loop.generator is not None else None,
        "batches": loop.source.position if loop.source is not None else 0,
        "history": vars(loop.history),
    })


def _train_generation(loop: _Loop, loss_of, n_layers: int, steps: int, lr: float,
                      eigenvalues: np.ndarray | None) -> float:
    """``steps`` optimizer steps on the first ``n_layers`` layers; records the history."""
    began = time.perf_counter()
    for _ in range(steps):
        loop.optimizer.zero_grad(set_to_none=True)
        loss = loss_of(n_layers)
        loss.backward()
        loop.optimizer.step()
    last_loss = float(loss.detach())
    if not np.isfinite(last_loss):
        # stop before the checkpoint, which keeps the last finite generation
        raise FloatingPointError(
            f"training diverged in generation {loop.done + 1}: the loss is {last_loss}; "
            f"lower lr (now {lr})"
        )
    loop.history.generation_loss.append(last_loss)
    if loop.history.spectral_radius is not None:
        trained = _effective(loop.model)[:n_layers]
        loop.history.spectral_radius.append(contraction_factor(trained, eigenvalues))
    loop.history.wall_time_s += time.perf_counter() - began
    loop.done += 1
    return last_loss


def _run_generations(
    model,
    loss_of: Callable[[int], torch.Tensor],
    *,
    config: dict,
    generations: int,
    checkpoint: Path | None,
    resume: bool,
    progress: bool | None,
    callback: Callable[[TrainingProgress], None] | None,
    generator: torch.Generator | None,
    eigenvalues: np.ndarray | None,
    source: _Batches | None = None,
) -> TrainingResult:
    """The loop shared by both trainers: generations, checkpoints, resume, progress.

    ``generations`` is not a setting of the checkpoint: generation g does not depend on how many
    follow it, so a finished run resumed with more generations continues where it stopped and its
    first generations stay bit for bit those of the shorter run. Fewer generations than the
    checkpoint holds is refused (they cannot be taken back)."""
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {describe(resume)}")
    callback = check_callback(callback, arguments="progress")
    progress = check_progress(progress)
    parameters = _learned_parameters(model)
    optimizer = _OPTIMIZERS[config["optimizer"]](parameters, lr=config["lr"])
    history = _History([], [] if eigenvalues is not None else None)
    loop = _Loop(model, parameters, optimizer, generator, source, history)
    if checkpoint is not None and resume and checkpoint.exists():
        _restore(loop, checkpoint, config, generations)
    resumed_from = loop.done
    bar = progress_bar(
        range(resumed_from, generations), progress=progress, total=generations,
        initial=resumed_from, desc=f"{type(model).__name__} generations",
    )
    for generation in bar:
        n_layers = min(generation + 1, model.T) if config["incremental"] else model.T
        last_loss = _train_generation(loop, loss_of, n_layers, config["steps_per_generation"],
                                      config["lr"], eigenvalues)
        bar.set_postfix(loss=f"{last_loss:.3e}")
        if checkpoint is not None:
            _save(loop, checkpoint, config)
        if callback is not None:
            callback(TrainingProgress(round=loop.done, loss=last_loss, model=model,
                                      optimizer_steps=loop.done * config["steps_per_generation"]))
    bar.close()
    radius = loop.history.spectral_radius
    return TrainingResult(
        losses=list(loop.history.generation_loss),
        rounds=loop.done,
        optimizer_steps=loop.done * config["steps_per_generation"],
        wall_time_s=loop.history.wall_time_s,
        resumed_from=resumed_from,
        checkpoint=checkpoint,
        steps=_effective(model),
        info={"spectral_radius": None if radius is None else list(radius),
              "thresholds": _effective_thresholds(model)},
    )


def _operator_fingerprint(model) -> str:
    """The operator's own fingerprint (data hash) or the fixed point, with the response of the
    map the training unrolls (A^T A for DUGD and ISTA, the fixed-point map for PSOR) to a fixed
    probe, so that callable operators and maps are told apart too."""
    parameter = _learned_parameters(model)[0]
    if isinstance(model, UnfoldedPSOR):
        n, label = model.fixed_point.shape[0], "psor:" + fingerprint(model.fixed_point)
    else:
        n, label = model.operator.n, model.operator.fingerprint()
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, n, generator=generator, dtype=parameter.dtype).to(parameter.device)
    with torch.no_grad():
        if isinstance(model, UnfoldedPSOR):
            response = model.fixed_point_map(probe)
        else:
            response = model.operator.adjoint(model.operator.apply(probe))
    return f"{label}:{fingerprint(response)}"


def _common_config(model, kind, generations, steps_per_generation, lr, optimizer, incremental):
    parameters = _learned_parameters(model)
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
        "initial_parameter": fingerprint(*parameters),
        "dtype": str(parameters[0].dtype),
        "steps_per_generation": steps_per_generation,
        "lr": lr,
        "optimizer": optimizer,
        "incremental": incremental,
    }
    if isinstance(model, UnfoldedISTA):
        config["lam"] = model.lam
        config["support_selection"] = model.support_selection
    return config, generations


def _check_noise_std(noise_std) -> float:
    return check_real(noise_std, "noise_std", low=0)


def _check_covariance(signal_covariance, n: int) -> np.ndarray | None:
    """None, or a symmetric PSD (n, n) float64 matrix (a length-n vector is its diagonal)."""
    if signal_covariance is None:
        return None
    covariance = checked_array(signal_covariance, "signal_covariance", ndim=(1, 2))
    if covariance.ndim == 1:
        if covariance.shape != (n,):
            raise ValueError(f"signal_covariance must have shape ({n},) or ({n}, {n}) (the "
                             f"operator has n = {n} unknowns), got {covariance.shape}")
        if np.any(covariance < 0):
            raise ValueError("signal_covariance must be positive semidefinite, but its diagonal "
                             f"has the negative entry {covariance.min():.3g}")
        return np.diag(covariance)
    if covariance.shape != (n, n):
        raise ValueError(f"signal_covariance must have shape ({n}, {n}) (the operator has n = "
                         f"{n} unknowns), got {covariance.shape}")
    scale = max(float(np.abs(covariance).max()), np.finfo(float).tiny)
    asymmetry = float(np.abs(covariance - covariance.T).max())
    if asymmetry > 1e-10 * scale:
        raise ValueError(f"signal_covariance must be symmetric, but |S - S^T| reaches "
                         f"{asymmetry:.3g}")
    covariance = 0.5 * (covariance + covariance.T)
    smallest = float(np.linalg.eigvalsh(covariance)[0])
    if smallest < -1e-10 * scale * n:
        raise ValueError(f"signal_covariance must be positive semidefinite, but its smallest "
                         f"eigenvalue is {smallest:.3g}")
    return covariance


def _signal_setting(covariance: np.ndarray | None) -> str:
    return "identity" if covariance is None else "covariance:" + fingerprint(covariance)


def _spectral_problem(model: UnfoldedGD, covariance: np.ndarray | None):
    """Eigenvalues lambda_i of A^T A and the signal weights d_i = v_i^T Sigma v_i (None: all 1).

    The eigenbasis operator is its own eigenbasis (coordinates in the given order); otherwise
    the operator's known spectrum is used when Sigma = I, and the eigendecomposition of the
    Gram matrix (:func:`gram_matrix`: dense, sparse, LinearOperator, callable) when needed."""
    operator = model.operator
    if isinstance(operator, DiagonalOperator) and covariance is not None:
        eigenvalues = operator.eigenvalues.detach().cpu().to(torch.float64).numpy()
        return eigenvalues, np.diag(covariance).copy()
    if covariance is None:
        eigenvalues = operator.gram_eigenvalues()
        if eigenvalues is not None:
            return np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0), None
    eigenvalues, vectors = np.linalg.eigh(gram_matrix(operator))
    eigenvalues = np.maximum(eigenvalues, 0.0)  # round-off of a singular A^T A
    if covariance is None:
        return eigenvalues, None
    return eigenvalues, np.einsum("ij,ik,kj->j", vectors, covariance, vectors)


def expected_loss(
    model: UnfoldedGD,
    *,
    signal_covariance=None,
    noise_std: float = 0.0,
    n_steps: int | None = None,
) -> float:
    r"""Exact expected MSE of an :class:`UnfoldedGD` for Gaussian signals and noise.

    For :math:`x^* \sim N(0, \Sigma)`, :math:`y = A x^* + \sigma \varepsilon`,
    :math:`\varepsilon \sim N(0, I_m)` and :math:`x_0 = 0`, the T-layer map is linear in y:
    :math:`x_T = M_T A^\top y` with :math:`M_T = \sum_t |\gamma_t| \prod_{s>t}(I - |\gamma_s| W)`,
    :math:`W = A^\top A`, and :math:`I - M_T W = B_T = \prod_t (I - |\gamma_t| W)`. Hence

    .. math::

        \frac1n E\|x_T - x^*\|^2 = \frac1n \Big[\operatorname{tr}(B_T \Sigma B_T^\top)
        + \sigma^2 \operatorname{tr}(M_T W M_T^\top)\Big]
        = \frac1n \sum_i \Big[\beta_T(\lambda_i)^2\, v_i^\top \Sigma v_i
        + \sigma^2 \lambda_i\, \mu_T(\lambda_i)^2\Big],

    with :math:`W = \sum_i \lambda_i v_i v_i^\top`, :math:`\beta_T(\lambda) = \prod_t
    (1 - |\gamma_t|\lambda)` and :math:`\mu_T(\lambda) = (1 - \beta_T(\lambda))/\lambda`
    (computed by :math:`\mu_{t+1} = (1 - |\gamma_t|\lambda)\mu_t + |\gamma_t|`, which is also
    right at :math:`\lambda = 0`). A singular :math:`W` is fine: a null direction keeps its
    prior variance, :math:`\beta(0) = 1`, and receives no noise.

    Args:
        model: the unfolded GD (any operator: dense, diagonal, sparse, LinearOperator, callable;
            the Gram matrix is formed with n operator applications when its spectrum is unknown
            or :math:`\Sigma \ne I`).
        signal_covariance: :math:`\Sigma`, an (n, n) symmetric PSD matrix or a length-n vector
            (its diagonal); None is :math:`I`.
        noise_std: :math:`\sigma \ge 0`.
        n_steps: layers to count (default T).

    Returns:
        The expected MSE per coordinate (float).

    >>> model = UnfoldedGD(1, np.eye(2), init=0.5)   # x_1 = y / 2: error -x*/2 + noise/2
    >>> expected_loss(model, noise_std=1.0)
    0.5
    """
    if not isinstance(model, UnfoldedGD):
        raise TypeError(f"model must be an UnfoldedGD, got {describe(model)}")
    covariance = _check_covariance(signal_covariance, model.operator.n)
    noise_std = _check_noise_std(noise_std)
    n_steps = model.T if n_steps is None else check_int(n_steps, "n_steps", low=0, high=model.T)
    eigenvalues, weights = _spectral_problem(model, covariance)
    spectrum = torch.as_tensor(eigenvalues, dtype=torch.float64)
    weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    with torch.no_grad():
        gammas = model.steps.detach().cpu().to(torch.float64)
        return float(_expected_loss(gammas, spectrum, n_steps, weights, noise_std**2))


class _Batches:
    """Minibatches ``(x, y)`` of the user's data, reproducible from ``generator`` and position.

    Tensors and map-style Datasets are stacked once; each batch is ``batch_size`` distinct
    samples drawn with ``torch.randperm`` from the training generator (all samples when
    ``batch_size`` >= their number), so resuming needs only the generator state. A DataLoader is
    read in its own order, cycling; ``position`` counts the batches taken, and resume skips that
    many (exact when the loader's order is deterministic, e.g. ``shuffle=False``)."""

    def __init__(self, data, model, batch_size: int, generator: torch.Generator):
        reference = _learned_parameters(model)[0]
        self.dtype, self.device = reference.dtype, reference.device
        self.n, self.m = model.operator.n, model.operator.m
        self.batch_size, self.generator, self.position = batch_size, generator, 0
        self.loader, self._iterator = None, None
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader = data
            self.description = self._loader_description(data)
            return
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(f"data must be a pair (x, y), got a {type(data).__name__} of "
                                 f"length {len(data)}")
            x, y = data
        elif (hasattr(data, "__getitem__") and hasattr(data, "__len__")
              and not isinstance(data, (str, bytes, np.ndarray, torch.Tensor))):
            x, y = self._stack_dataset(data)
        else:
            raise TypeError("data must be a pair (x, y) of arrays or tensors, a map-style torch "
                            f"Dataset of (x, y) pairs, or a DataLoader, got {describe(data)}")
        self.x, self.y = self._check_pair(x, y, "data")
        self.description = "data:" + fingerprint(self.x.cpu(), self.y.cpu())

    @staticmethod
    def _stack_dataset(dataset):
        if len(dataset) == 0:
            raise ValueError("data must not be an empty Dataset")
        items = [dataset[i] for i in range(len(dataset))]
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
            raise ValueError("data must be a Dataset of (x, y) pairs; its first item is "
                             f"{describe(items[0])}")
        stack = [torch.stack([torch.as_tensor(item[k]) for item in items]) for k in (0, 1)]
        return stack[0], stack[1]

    def _loader_description(self, loader) -> str:
        dataset = loader.dataset
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            x, y = self._stack_dataset(dataset)
            content = fingerprint(torch.as_tensor(x).cpu(), torch.as_tensor(y).cpu())
        else:
            content = f"iterable:{type(dataset).__qualname__}"
        return (f"loader:{content}:batch={loader.batch_size}:"
                f"sampler={type(loader.sampler).__name__}")

    def _check_pair(self, x, y, name: str):
        x = torch.as_tensor(checked_array(x, f"{name} x", ndim=2)) if not isinstance(
            x, torch.Tensor) else x
        y = torch.as_tensor(checked_array(y, f"{name} y", ndim=2)) if not isinstance(
            y, torch.Tensor) else y
        for value, label, size in ((x, "x", self.n), (y, "y", self.m)):
            if value.ndim != 2 or value.shape[1] != size:
                raise ValueError(f"{name} {label} must have shape (samples, {size}) for this "
                                 f"operator, got {tuple(value.shape)}")
            if value.is_complex() or not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} {label} must be real and finite")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"{name} x and y must hold the same positive number of samples, "
                             f"got {x.shape[0]} and {y.shape[0]}")
        return (x.detach().to(device=self.device, dtype=self.dtype),
                y.detach().to(device=self.device, dtype=self.dtype))

    def seek(self, position: int) -> None:
        self.position = 0
        if self.loader is not None:
            for _ in range(position):
                self.draw()
        self.position = position

    def draw(self):
        self.position += 1
        if self.loader is None:
            count = self.x.shape[0]
            if self.batch_size >= count:
                return self.x, self.y
            index = torch.randperm(count, generator=self.generator)[: self.batch_size]
            index = index.to(self.device)
            return self.x[index], self.y[index]
        if self._iterator is None:
            self._iterator = iter(self.loader)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            batch = next(self._iterator)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"data loader batches must be (x, y) pairs, got {describe(batch)}")
        return self._check_pair(batch[0], batch[1], "data batch")


def _signal_root(covariance: np.ndarray, reference: torch.Tensor) -> torch.Tensor:
    """S with S S^T = Sigma (symmetric square root; Sigma may be singular)."""
    eigenvalues, vectors = np.linalg.eigh(covariance)
    root = (vectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ vectors.T
    return torch.as_tensor(root, dtype=reference.dtype, device=reference.device)


def train_incremental(
    model,
    *,
    data=None,
    signal_covariance=None,
    noise_std: float = 0.0,
    batch_size: int = 10000,
    steps_per_generation: int = 500,
    lr: float = 0.002,
    generations: int | None = None,
    incremental: bool = True,
    optimizer: str = "adam",
    seed: int | torch.Generator | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[TrainingProgress], None] | None = None,
) -> TrainingResult:
    r"""Stochastic incremental training of an :class:`UnfoldedGD`, :class:`UnfoldedISTA` or
    :class:`UnfoldedPSOR`.

    Generation g minimizes the minibatch MSE :math:`\tfrac{1}{bn}\|x_g - x^*\|_F^2` of the first
    :math:`\min(g, T)` layers (all T with ``incremental=False``) over ``steps_per_generation``
    minibatches. With ``data`` the minibatches come from the user's samples :math:`(x^*, y)`;
    without, DUGD draws fresh :math:`x^* \sim N(0, \Sigma)`, :math:`y = A x^* + \sigma
    \varepsilon` and PSOR draws :math:`x_0 \sim N(x^*, I)`. The model is trained in place.

    Args:
        model: the module to train (:class:`UnfoldedISTA` needs ``data``).
        data: the user's training pairs: a tuple ``(x, y)`` of arrays or tensors of shapes
            ``(N, n)`` and ``(N, m)``, a map-style ``torch.utils.data.Dataset`` of ``(x, y)``
            pairs, or a ``DataLoader`` yielding ``(x, y)`` batches (used in its own order and
            batch size). None: synthetic Gaussian data.
        signal_covariance: :math:`\Sigma` of the synthetic signals ((n, n) PSD, or its diagonal);
            None is I. DUGD without ``data`` only.
        noise_std: :math:`\sigma \ge 0` of the synthetic noise. DUGD without ``data`` only.
        batch_size: minibatch size (the notebook's: 10000; with ``data``, distinct samples per
            step, all if fewer).
        steps_per_generation, lr: optimizer steps per generation and learning rate (the
            notebook: 500 Adam steps, 0.002).
        generations: number of generations (default T). A finished checkpointed run resumed
            with more generations is extended; its first generations are unchanged.
        incremental: False trains all layers in every generation (the control).
        optimizer: ``"adam"`` (default, betas (0.9, 0.999), eps 1e-8) or ``"sgd"``.
        seed: int, ``torch.Generator`` (advanced in place) or None.
        checkpoint: file written after every generation, or None.
        resume: continue from ``checkpoint`` if it exists (the default, as in ``train_model``);
            one written with other settings (any above but ``generations``, the model, operator,
            initial steps, data, covariance) is a ``ValueError``. False: start afresh.
        progress: progress bar (None: only on a terminal).
        callback: ``callback(progress: TrainingProgress)`` after each generation's checkpoint.

    Returns:
        :class:`stepsize._results.TrainingResult`: ``losses`` (last loss of each generation),
        ``rounds`` (generations), ``steps`` (learned ``|gamma|``, or PSOR's ``omega``), ``info``
        with ``spectral_radius`` (:math:`\rho(Q_g)` per generation, None if the spectrum is
        unknown) and ``thresholds`` (an :class:`UnfoldedISTA`'s, else None).

    >>> model = UnfoldedGD(2, np.diag([1.0, 2.0]), init=0.3)
    >>> result = train_incremental(model, batch_size=64, steps_per_generation=50, lr=0.05,
    ...                            seed=0, progress=False)
    >>> len(result.losses), result.rounds, result.optimizer_steps
    (2, 2, 100)
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    config, generations = _common_config(
        model, "incremental", generations, steps_per_generation, lr, optimizer, incremental
    )
    checkpoint, noise_std = check_checkpoint_path(checkpoint), _check_noise_std(noise_std)
    generator, seed_description = _generator(seed)
    config.update(batch_size=batch_size, seed=seed_description)
    loss_of, source = _minibatch_loss(model, data, signal_covariance, noise_std, batch_size,
                                      generator, config)
    eigenvalues = model.operator.gram_eigenvalues() if isinstance(model, UnfoldedGD) else None
    return _run_generations(
        model, loss_of, config=config, generations=generations, checkpoint=checkpoint,
        resume=resume, progress=progress, callback=callback, generator=generator,
        eigenvalues=eigenvalues, source=source,
    )


def _minibatch_loss(model, data, signal_covariance, noise_std: float, batch_size: int,
                    generator: torch.Generator, config: dict):
    """The minibatch loss of ``train_incremental`` as a function of the number of layers, and
    the data source it draws from (None for synthetic data); records the data in ``config``."""
    synthetic_gd = data is None and isinstance(model, UnfoldedGD)
    if (signal_covariance is not None or noise_std) and not synthetic_gd:
        raise ValueError("signal_covariance and noise_std describe synthetic data for an "
                         "UnfoldedGD; with data= (or another model) put them in the data")
    if data is None and isinstance(model, UnfoldedISTA):
        raise ValueError("data must be given for an UnfoldedISTA (pairs (x, y) of sparse signals "
                         "and their measurements), got None")
    if data is not None and isinstance(model, UnfoldedPSOR):
        raise ValueError("data is not supported for an UnfoldedPSOR (it trains on x_0 ~ "
                         "N(x*, I)); pass data=None")
    if data is not None:
        source = _Batches(data, model, batch_size, generator)
        config["data"] = source.description

        def loss_of(n_layers: int) -> torch.Tensor:
            x_true, y = source.draw()
            return model._data_loss(x_true, y, n_layers)
        return loss_of, source
    if not synthetic_gd:
        return (lambda n_layers: model._training_loss(batch_size, generator, n_layers)), None
    covariance = _check_covariance(signal_covariance, model.operator.n)
    config.update(signal=_signal_setting(covariance), noise_std=noise_std)
    root = None if covariance is None else _signal_root(covariance, model.steps)

    def synthetic_loss(n_layers: int) -> torch.Tensor:
        return model._training_loss(batch_size, generator, n_layers, root, noise_std)
    return synthetic_loss, None


def train_expected_loss(
    model: UnfoldedGD,
    *,
    signal_covariance=None,
    noise_std: float = 0.0,
    steps_per_generation: int = 500,
    lr: float = 0.002,
    generations: int | None = None,
    incremental: bool = True,
    optimizer: str = "adam",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[TrainingProgress], None] | None = None,
) -> TrainingResult:
    r"""Train an :class:`UnfoldedGD` on the exact population loss (deterministic, float64).

    Generation g minimizes the closed-form expected MSE of :func:`expected_loss` for
    :math:`x^* \sim N(0, \Sigma)` and :math:`y = A x^* + \sigma\varepsilon`,

    .. math::

        L_g(\gamma) = \frac1n \sum_i \Big[\beta_g(\lambda_i)^2\, v_i^\top\Sigma v_i
        + \sigma^2 \lambda_i\, \mu_g(\lambda_i)^2\Big], \qquad
        \beta_g(\lambda) = \prod_{t<\min(g,T)} (1 - |\gamma_t| \lambda),

    (all T layers with ``incremental=False``); with :math:`\Sigma = I`, :math:`\sigma = 0` it is
    :math:`\tfrac1n\sum_i \beta_g(\lambda_i)^2`, the expectation of the notebook's minibatch
    loss. Same schedule, optimizer, checkpoints and resume as :func:`train_incremental`.

    Args:
        model: an :class:`UnfoldedGD` with any operator (dense, diagonal, scipy sparse,
            ``LinearOperator``, callable; a singular :math:`A^\top A` is fine). Its spectrum, or
            the Gram matrix's eigendecomposition when it is unknown or :math:`\Sigma \ne I`, is
            computed once.
        signal_covariance: :math:`\Sigma`, (n, n) symmetric PSD or a length-n diagonal; None: I.
        noise_std: :math:`\sigma \ge 0`.
        steps_per_generation, lr, generations, incremental, optimizer, checkpoint, resume,
        progress, callback: as in :func:`train_incremental`.

    Returns:
        :class:`stepsize._results.TrainingResult` as in :func:`train_incremental`; its
        ``losses`` are exact expected losses.

    >>> model = UnfoldedGD(1, np.diag([1.0, 1.0]), init=0.3)
    >>> result = train_expected_loss(model, steps_per_generation=200, lr=0.05, progress=False)
    >>> round(float(result.steps[0]), 3)
    1.0
    """
    if not isinstance(model, UnfoldedGD):
        raise TypeError(f"model must be an UnfoldedGD, got {describe(model)}")
    config, generations = _common_config(
        model, "expected_loss", generations, steps_per_generation, lr, optimizer, incremental
    )
    checkpoint = check_checkpoint_path(checkpoint)
    covariance = _check_covariance(signal_covariance, model.operator.n)
    noise_std = _check_noise_std(noise_std)
    config.update(signal=_signal_setting(covariance), noise_std=noise_std)
    eigenvalues, weights = _spectral_problem(model, covariance)
    device = model.steps.device
    spectrum = torch.as_tensor(eigenvalues, dtype=torch.float64, device=device)
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float64, device=device)
    noise_variance = noise_std**2

    def loss_of(n_layers: int) -> torch.Tensor:
        return _expected_loss(model.steps, spectrum, n_layers, weights, noise_variance)

    return _run_generations(
        model, loss_of, config=config, generations=generations, checkpoint=checkpoint,
        resume=resume, progress=progress, callback=callback, generator=None,
        eigenvalues=np.sort(eigenvalues),
    )
