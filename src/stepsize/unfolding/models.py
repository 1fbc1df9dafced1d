r"""Deep-unfolded gradient descent (DUGD) and deep-unfolded periodic SOR (PSOR) as torch modules.

DUGD unrolls T gradient steps on :math:`\tfrac12\|y - Ax\|^2` from :math:`x_0 = 0` with one
trainable step per layer,

.. math::

    x_{t+1} = x_t + |\gamma_t|\, A^\top (y - A x_t), \qquad t = 0, \dots, T - 1,

the absolute value keeping every step positive exactly as the authors' code does (``abs(gamma)``).
PSOR unrolls a fixed-point map :math:`f` with trainable periodic relaxation factors,
:math:`x_{k+1} = x_k + \omega_{k \bmod T}\,(f(x_k) - x_k)`; with :math:`f` the Jacobi map this is
the learned counterpart of Chebyshev-PSOR.

Reference: S. Takabe and T. Wadayama, "Theoretical Interpretation of Learned Step Size in
Deep-Unfolded Gradient Descent", arXiv:2001.05142; "Convergence Acceleration via Chebyshev Step:
Plausible Interpretation of Deep-Unfolded Gradient Descent", arXiv:2010.13335.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from stepsize._validation import check_choice, check_int, check_real, describe
from stepsize.chebyshev import ORDERS, chebyshev_steps
from stepsize.unfolding.operators import (
    DiagonalOperator,
    Operator,
    as_operator,
    checked_array,
    gram_matrix,
    refuse_meta,
)

__all__ = ["UnfoldedGD", "UnfoldedISTA", "UnfoldedPSOR", "soft_threshold"]


def _initial_values(init, T: int, name: str) -> np.ndarray:
    """A constant or a length-T array of finite initial values, as a new float64 array (a copy:
    the parameter built from it must not share memory with the caller's array, which training
    would otherwise overwrite)."""
    if isinstance(init, (np.ndarray, torch.Tensor, list, tuple)):
        return np.array(checked_array(init, name, shape=(T,)), dtype=np.float64, copy=True)
    return np.full(T, check_real(init, name))


def _check_batch(tensor, name: str, size: int, reference: torch.Tensor) -> torch.Tensor:
    """Validate a batch of row vectors (last axis ``size``) and match the model's dtype/device."""
    if not isinstance(tensor, torch.Tensor):
        tensor = torch.as_tensor(checked_array(tensor, name, ndim=(1, 2)))
    refuse_meta(tensor, name)
    if tensor.is_complex():
        raise TypeError(f"{name} must be real, got complex {describe(tensor)}")
    if tensor.ndim not in (1, 2) or tensor.shape[-1] != size:
        raise ValueError(
            f"{name} must have shape ({size},) or (batch, {size}), got {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be an empty batch, got shape {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite, but it has {bad} NaN or infinite entries")
    return tensor.to(dtype=reference.dtype, device=reference.device)


def _placement(operator: Operator, dtype) -> tuple[torch.dtype, torch.device | None]:
    """The dtype (given, else the operator's, else float64) and device of a model's parameters."""
    reference = operator.reference()
    if dtype is None:
        dtype = reference.dtype if reference is not None else torch.float64
    return dtype, (reference.device if reference is not None else None)


def _check_n_steps(n_steps, default: int, high: int | None) -> int:
    return default if n_steps is None else check_int(n_steps, "n_steps", low=0, high=high)


class UnfoldedGD(nn.Module):
    r"""Deep-unfolded gradient descent with T learned step sizes.

    .. math::

        x_0 = 0, \qquad x_{t+1} = x_t + |\gamma_t|\, A^\top (y - A x_t).

    Args:
        T: number of layers (unfolded steps), ``T >= 1``.
        operator: the forward operator ``A`` (m x n): a dense numpy array or tensor, a scipy
            ``LinearOperator``, or an :class:`~stepsize.unfolding.Operator`
            (:class:`DiagonalOperator` for the eigenbasis form, :class:`CallableOperator`).
        init: initial steps: a number (the paper uses 0.3), an array of T steps, or
            ``"chebyshev"`` (the Chebyshev steps of the operator's exact spectrum, in
            ``chebyshev_order``; from its Gram matrix when the operator does not know it;
            needs :math:`A^\top A` positive definite).
        chebyshev_order: order of the Chebyshev initial steps (default ``"fractal"``, stable in
            float32).
        dtype: dtype of the steps and of a numpy operator; default: the operator's dtype for
            a tensor operator, else float64.

    Attributes:
        steps: the ``nn.Parameter`` :math:`\gamma` of shape ``(T,)``; the effective steps are
            ``steps.abs()`` (see :attr:`step_sizes`).

    >>> model = UnfoldedGD(2, np.eye(3), init=[1.0, 0.5])
    >>> model(torch.ones(3, dtype=torch.float64)).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        T: int,
        operator,
        *,
        init=0.3,
        chebyshev_order: str = "fractal",
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.T = check_int(T, "T", low=1)
        check_choice(chebyshev_order, "chebyshev_order", ORDERS)
        self.operator: Operator = as_operator(operator, dtype=dtype)
        dtype, device = _placement(self.operator, dtype)
        if isinstance(init, str):
            check_choice(init, "init", ("chebyshev",))
            eigenvalues = self._require_eigenvalues("init='chebyshev'")
            values = chebyshev_steps(eigenvalues[0], eigenvalues[-1], self.T, chebyshev_order)
        else:
            values = _initial_values(init, self.T, "init")
        self.steps = nn.Parameter(torch.as_tensor(values, dtype=dtype, device=device))

    def _require_eigenvalues(self, purpose: str) -> np.ndarray:
        # an operator that does not know its spectrum (sparse, LinearOperator, callable) gets it
        # from its Gram matrix, formed with n applications of A and A^T
        eigenvalues = _gram_spectrum(self.operator)
        if eigenvalues[0] <= 0:
            raise ValueError(
                f"{purpose} needs A^T A positive definite, but its smallest eigenvalue is "
                f"{eigenvalues[0]:.3g}"
            )
        return eigenvalues

    @property
    def step_sizes(self) -> torch.Tensor:
        """The effective steps :math:`|\\gamma_t|` (detached), layer order."""
        return self.steps.detach().abs()

    def _iterates(self, y: torch.Tensor, n_steps: int) -> Iterator[torch.Tensor]:
        # The operator sees row batches (its contract); a single y of shape (m,) is one row.
        shape = y.shape[:-1] + (self.operator.n,)
        rows = y.reshape(-1, y.shape[-1])
        x = rows.new_zeros(rows.shape[0], self.operator.n)
        yield x.reshape(shape)
        gammas = self.steps.abs()
        for t in range(n_steps):
            x = x + gammas[t] * self.operator.adjoint(rows - self.operator.apply(x))
            yield x.reshape(shape)

    def _unroll(self, y: torch.Tensor, n_steps: int) -> torch.Tensor:
        # deque(maxlen=1) keeps only the last iterate, so memory does not grow with n_steps.
        return deque(self._iterates(y, n_steps), maxlen=1)[0]

    def iterates(self, y, n_steps: int | None = None) -> Iterator[torch.Tensor]:
        """Yield :math:`x_0, x_1, \\dots, x_{n\\_steps}` for the observations ``y``.

        Args:
            y: observations, shape ``(m,)`` or ``(batch, m)``.
            n_steps: number of layers to run, ``0 <= n_steps <= T`` (default T).
        """
        y = _check_batch(y, "y", self.operator.m, self.steps)
        return self._iterates(y, _check_n_steps(n_steps, self.T, self.T))

    def forward(self, y, n_steps: int | None = None) -> torch.Tensor:
        """Run the first ``n_steps`` layers (default all T) from :math:`x_0 = 0`.

        Args:
            y: observations, shape ``(m,)`` or ``(batch, m)``.
            n_steps: ``0 <= n_steps <= T``; incremental training uses the first g layers.

        Returns:
            :math:`x_{n\\_steps}`, shape ``(n,)`` or ``(batch, n)``.
        """
        y = _check_batch(y, "y", self.operator.m, self.steps)
        return self._unroll(y, _check_n_steps(n_steps, self.T, self.T))

    def _training_loss(
        self,
        batch_size: int,
        generator: torch.Generator,
        n_layers: int,
        signal_root: torch.Tensor | None = None,
        noise_std: float = 0.0,
    ):
        """Minibatch MSE of :math:`x_{n\\_layers}` on fresh synthetic data.

        Draws :math:`x^* = S z`, :math:`z \\sim N(0, I)` (:math:`S` = ``signal_root``, identity
        when None) and :math:`y = A x^* + \\sigma \\varepsilon`. For the eigenbasis operator with
        :math:`S = I` and :math:`\\sigma = 0` the error of every coordinate is
        :math:`\\beta(\\lambda_i) x^*_i` with :math:`\\beta(\\lambda) = \\prod_{t<g}(1 -
        |\\gamma_t| \\lambda)`, so the same minibatch loss is computed in O(bn + gn) instead of
        O(bng) by unrolling.
        """
        x_true = torch.randn(
            batch_size, self.operator.n, generator=generator, dtype=self.steps.dtype,
            device=generator.device,
        ).to(self.steps.device)
        plain = signal_root is None and noise_std == 0.0
        if plain and isinstance(self.operator, DiagonalOperator):
            gammas = self.steps[:n_layers, None].abs()
            beta = (1.0 - gammas * self.operator.eigenvalues[None, :]).prod(dim=0)
            return (beta.square() * x_true.square().mean(dim=0)).mean()
        if signal_root is not None:
            x_true = x_true @ signal_root.T
        y = self.operator.apply(x_true)
        if noise_std:
            noise = torch.randn(
                batch_size, self.operator.m, generator=generator, dtype=self.steps.dtype,
                device=generator.device,
            ).to(self.steps.device)
            y = y + noise_std * noise
        return self._data_loss(x_true, y, n_layers)

    def _data_loss(self, x_true: torch.Tensor, y: torch.Tensor, n_layers: int):
        """MSE of :math:`x_{n\\_layers}(y)` against ``x_true`` (mean over batch and coordinates)."""
        return (self._unroll(y, n_layers) - x_true).square().mean()

    def extra_repr(self) -> str:
        return f"T={self.T}"


class UnfoldedPSOR(nn.Module):
    r"""Deep-unfolded periodic successive over-relaxation of a fixed-point map.

    .. math::

        x_{k+1} = x_k + \omega_{k \bmod T}\,\big(f(x_k) - x_k\big).

    With :math:`f` linear, :math:`f(x) = Bx + c`, the error obeys
    :math:`e_{k+1} = (I - \omega_k (I - B)) e_k`: gradient descent with steps :math:`\omega_k` on
    the spectrum of :math:`I - B`, so the Chebyshev steps of that interval are the natural
    initial (and untrained) factors (Chebyshev-PSOR).

    Args:
        T: period (number of trainable factors), ``T >= 1``.
        fixed_point_map: ``f``, a torch callable on row batches ``(batch, n) -> (batch, n)``
            (see :meth:`jacobi` for linear systems).
        fixed_point: :math:`x^*` with :math:`f(x^*) = x^*`, shape ``(n,)``; the training target.
        init: a number (1.0 = the plain fixed-point iteration) or an array of T factors (e.g.
            ``chebyshev_steps(lmin, lmax, T)`` of the spectrum of :math:`I - B`).
        dtype: default float64.

    Attributes:
        omegas: the ``nn.Parameter`` of shape ``(T,)`` (used as is, no absolute value:
            over-relaxation factors may exceed 1 and the map fixes their sign).

    >>> f = lambda x: 0.5 * x
    >>> model = UnfoldedPSOR(1, f, np.zeros(2), init=2.0)
    >>> model(torch.ones(2, dtype=torch.float64), n_steps=1).tolist()
    [0.0, 0.0]

    For a linear system, :meth:`jacobi` builds the Jacobi map and its Chebyshev factors.
    """

    def __init__(
        self,
        T: int,
        fixed_point_map: Callable[[torch.Tensor], torch.Tensor],
        fixed_point,
        *,
        init=1.0,
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__()
        self.T = check_int(T, "T", low=1)
        if not callable(fixed_point_map):
            raise TypeError(f"fixed_point_map must be callable, got {describe(fixed_point_map)}")
        self.fixed_point_map = fixed_point_map
        fixed_point = torch.as_tensor(
            checked_array(fixed_point, "fixed_point", ndim=1), dtype=dtype
        )
        self.register_buffer("fixed_point", fixed_point, persistent=False)
        self.omegas = nn.Parameter(
            torch.as_tensor(_initial_values(init, self.T, "init"), dtype=dtype)
        )

    @classmethod
    def jacobi(
        cls, T: int, P, q, *, init="chebyshev", chebyshev_order: str = "fractal"
    ) -> UnfoldedPSOR:
        r"""Unfolded PSOR of the Jacobi map of :math:`P x = q` (float64, row batches).

        :math:`f(x) = x + D^{-1}(q - P x)`, :math:`D = \operatorname{diag}(P)`, so that
        :math:`I - B = D^{-1} P`; ``init="chebyshev"`` takes the Chebyshev steps of its exact
        spectrum (:func:`stepsize.chebyshev.jacobi_spectrum`), i.e. Chebyshev-PSOR before any
        training. The fixed point is ``numpy.linalg.solve(P, q)``.

        Args:
            T: period.
            P: symmetric matrix with a positive diagonal and :math:`D^{-1}P` positive definite.
            q: right-hand side, shape ``(n,)``.
            init: ``"chebyshev"``, a number or an array of T factors.
            chebyshev_order: order of the Chebyshev factors.

        >>> P = np.array([[2.0, 1.0], [1.0, 2.0]])  # D^{-1} P has eigenvalues 0.5 and 1.5
        >>> model = UnfoldedPSOR.jacobi(2, P, np.ones(2), init=[1 / 1.5, 1 / 0.5])
        >>> model(np.zeros(2), n_steps=2).detach().numpy().round(6).tolist()
        [0.333333, 0.333333]
        """
        from stepsize.chebyshev import jacobi_spectrum

        P = checked_array(P, "P", ndim=2)
        q = checked_array(q, "q", shape=(P.shape[0],))
        T = check_int(T, "T", low=1)
        check_choice(chebyshev_order, "chebyshev_order", ORDERS)
        if isinstance(init, str):
            check_choice(init, "init", ("chebyshev",))
            spectrum = jacobi_spectrum(P)
            init = chebyshev_steps(spectrum.lmin, spectrum.lmax, T, chebyshev_order)
        if np.any(np.diag(P) <= 0):
            raise ValueError("P must have a positive diagonal for the Jacobi map")
        matrix = torch.as_tensor(P)
        rhs = torch.as_tensor(q)
        inverse_diagonal = 1.0 / torch.diagonal(matrix)

        def jacobi_map(x: torch.Tensor) -> torch.Tensor:
            return x + (rhs.to(x) - x @ matrix.to(x).T) * inverse_diagonal.to(x)

        return cls(T, jacobi_map, np.linalg.solve(P, q), init=init)

    def _unroll(self, x0: torch.Tensor, n_steps: int) -> torch.Tensor:
        # fixed_point_map sees row batches (its contract); a single x0 of shape (n,) is one row.
        x = x0.reshape(-1, x0.shape[-1])
        for k in range(n_steps):
            x = x + self.omegas[k % self.T] * (self.fixed_point_map(x) - x)
        return x.reshape(x0.shape)

    def forward(self, x0, n_steps: int | None = None) -> torch.Tensor:
        """Run ``n_steps`` iterations (default one period T; more repeat the factors).

        Args:
            x0: starting points, shape ``(n,)`` or ``(batch, n)``.
            n_steps: number of iterations, ``>= 0``.

        Returns:
            :math:`x_{n\\_steps}`, same shape as ``x0``.
        """
        x0 = _check_batch(x0, "x0", self.fixed_point.shape[0], self.omegas)
        return self._unroll(x0, _check_n_steps(n_steps, self.T, None))

    def _training_loss(self, batch_size: int, generator: torch.Generator, n_layers: int):
        """Minibatch MSE of :math:`x_{n\\_layers}` from fresh :math:`x_0 \\sim N(x^*, I)`."""
        noise = torch.randn(
            batch_size, self.fixed_point.shape[0], generator=generator, dtype=self.omegas.dtype,
            device=generator.device,
        ).to(self.omegas.device)
        return (self._unroll(self.fixed_point + noise, n_layers) - self.fixed_point).square().mean()

    def extra_repr(self) -> str:
        return f"T={self.T}, n={self.fixed_point.shape[0]}"


def soft_threshold(v: torch.Tensor, threshold) -> torch.Tensor:
    r"""The proximal map of :math:`\theta\|\cdot\|_1`: :math:`\operatorname{sign}(v)
    \max(|v| - \theta, 0)`, elementwise (differentiable in ``v`` and ``threshold``).

    >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0).tolist()
    [-1.0, 0.0, 2.0]
    """
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0.0)


def _gram_spectrum(operator: Operator) -> np.ndarray:
    """Sorted eigenvalues of A^T A: the operator's own when it knows them, else from the Gram."""
    eigenvalues = operator.gram_eigenvalues()
    if eigenvalues is None:
        eigenvalues = np.linalg.eigvalsh(gram_matrix(operator))
    return np.sort(np.asarray(eigenvalues, dtype=np.float64))


class UnfoldedISTA(nn.Module):
    r"""Deep-unfolded ISTA for the lasso :math:`\min_x \tfrac12\|y - Ax\|^2 + \lambda\|x\|_1`.

    .. math::

        x_0 = 0, \qquad x_{t+1} = \eta_{\theta_t}\big(x_t + |\gamma_t|\, A^\top (y - A x_t)\big),
        \qquad \eta_\theta(v) = \operatorname{sign}(v)\max(|v| - \theta, 0),

    with one learned step :math:`\gamma_t` per layer and the threshold :math:`\theta_t =
    |\gamma_t|\lambda` of ISTA (``learn_thresholds=False``) or a learned threshold per layer
    :math:`\theta_t = |\tau_t|` (``learn_thresholds=True``, initialized at :math:`|\gamma_t|
    \lambda`). At ``init="ista"`` every step is :math:`1/L`, :math:`L = \lambda_{\max}(A^\top A)`,
    so the untrained model *is* T iterations of ISTA. Trained incrementally like DUGD
    (:func:`~stepsize.unfolding.train_incremental` with ``data=(x, y)``).

    With ``support_selection=(p, p_max)`` layer t keeps the :math:`\min(p(t+1), p_{\max})`
    fraction of largest-magnitude entries of each sample unshrunk (LISTA-CPSS's "support
    selection", Chen et al. 2018), so entries already found on the support lose the
    :math:`\theta_t` bias; off by default (plain ISTA).

    Args:
        T: number of layers, ``T >= 1``.
        operator: ``A`` (m x n): dense array or tensor, scipy sparse matrix or ``LinearOperator``,
            or an :class:`~stepsize.unfolding.Operator`.
        lam: the l1 weight :math:`\lambda \ge 0`.
        init: ``"ista"`` (steps 1/L), ``"chebyshev"`` (the Chebyshev steps of
            ``chebyshev_interval``), a number, or an array of T steps.
        learn_thresholds: learn one threshold per layer as well.
        chebyshev_interval: ``(lmin, lmax)`` for ``init="chebyshev"``; default the smallest
            positive and the largest eigenvalue of :math:`A^\top A`.
        chebyshev_order: order of the Chebyshev steps (default ``"fractal"``).
        support_selection: None, or ``(p, p_max)`` with ``0 <= p <= p_max <= 1`` (LISTA-CPSS
            uses (0.012, 0.13) for sparsity 0.1).
        dtype: dtype of the parameters (default: the operator's, else float64).

    Attributes:
        steps: ``nn.Parameter`` of shape ``(T,)``; the steps used are ``steps.abs()``.
        thresholds: ``nn.Parameter`` of shape ``(T,)`` with ``learn_thresholds``, else None.
        lipschitz: :math:`L = \lambda_{\max}(A^\top A)` (float).

    Reference: K. Gregor and Y. LeCun, "Learning Fast Approximations of Sparse Coding", ICML 2010
    (LISTA); D. Ito, S. Takabe and T. Wadayama, "Trainable ISTA for Sparse Signal Recovery", IEEE
    Trans. Signal Process. 67(12), 2019 (TISTA: learned steps only).

    >>> model = UnfoldedISTA(2, np.eye(2), lam=0.5)
    >>> model(torch.tensor([2.0, 0.25], dtype=torch.float64)).tolist()
    [1.5, 0.0]
    """

    def __init__(
        self,
        T: int,
        operator,
        lam: float,
        *,
        init="ista",
        learn_thresholds: bool = False,
        chebyshev_interval: tuple[float, float] | None = None,
        chebyshev_order: str = "fractal",
        support_selection: tuple[float, float] | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.T = check_int(T, "T", low=1)
        self.lam = check_real(lam, "lam", low=0)
        self.support_selection = None
        if support_selection is not None:
            if not isinstance(support_selection, (tuple, list)) or len(support_selection) != 2:
                raise ValueError("support_selection must be None or a pair (p, p_max), got "
                                 f"{describe(support_selection)}")
            maximum = check_real(support_selection[1], "support_selection[1]", low=0, high=1)
            increment = check_real(support_selection[0], "support_selection[0]", low=0,
                                   high=maximum)
            self.support_selection = (increment, maximum)
        if not isinstance(learn_thresholds, bool):
            raise TypeError(f"learn_thresholds must be a bool, got {describe(learn_thresholds)}")
        check_choice(chebyshev_order, "chebyshev_order", ORDERS)
        self.operator: Operator = as_operator(operator, dtype=dtype)
        dtype, device = _placement(self.operator, dtype)
        spectrum = _gram_spectrum(self.operator)
        self.lipschitz = float(spectrum[-1])
        if self.lipschitz <= 0:
            raise ValueError("operator must not be zero (the largest eigenvalue of A^T A is 0)")
        if isinstance(init, str):
            check_choice(init, "init", ("ista", "chebyshev"))
            if init == "ista":
                values = np.full(self.T, 1.0 / self.lipschitz)
            else:
                if chebyshev_interval is None:
                    positive = spectrum[spectrum > 1e-12 * self.lipschitz]
                    chebyshev_interval = (float(positive[0]), self.lipschitz)
                if not isinstance(chebyshev_interval, (tuple, list)) or len(
                    chebyshev_interval
                ) != 2:
                    raise ValueError("chebyshev_interval must be a pair (lmin, lmax), got "
                                     f"{describe(chebyshev_interval)}")
                low = check_real(chebyshev_interval[0], "chebyshev_interval[0]", low=0,
                                 low_inclusive=False)
                high = check_real(chebyshev_interval[1], "chebyshev_interval[1]", low=low)
                values = chebyshev_steps(low, high, self.T, chebyshev_order)
        else:
            values = _initial_values(init, self.T, "init")
        self.steps = nn.Parameter(torch.as_tensor(values, dtype=dtype, device=device))
        self.thresholds = None
        if learn_thresholds:
            self.thresholds = nn.Parameter(
                torch.as_tensor(np.abs(values) * self.lam, dtype=dtype, device=device)
            )

    @property
    def step_sizes(self) -> torch.Tensor:
        """The effective steps :math:`|\\gamma_t|` (detached), layer order."""
        return self.steps.detach().abs()

    @property
    def threshold_values(self) -> torch.Tensor:
        """The effective thresholds :math:`\\theta_t` (detached), layer order."""
        return self._thresholds().detach()

    def _thresholds(self) -> torch.Tensor:
        if self.thresholds is None:
            return self.steps.abs() * self.lam
        return self.thresholds.abs()

    def _unroll(self, y: torch.Tensor, n_steps: int) -> torch.Tensor:
        shape = y.shape[:-1] + (self.operator.n,)
        rows = y.reshape(-1, y.shape[-1])
        x = rows.new_zeros(rows.shape[0], self.operator.n)
        gammas, thresholds = self.steps.abs(), self._thresholds()
        for t in range(n_steps):
            gradient_step = x + gammas[t] * self.operator.adjoint(rows - self.operator.apply(x))
            x = soft_threshold(gradient_step, thresholds[t])
            kept = self._kept(t)
            if kept:
                magnitude = gradient_step.detach().abs()
                cutoff = torch.topk(magnitude, kept, dim=1).values[:, -1:]
                x = torch.where(magnitude >= cutoff, gradient_step, x)
        return x.reshape(shape)

    def _kept(self, t: int) -> int:
        """Entries per sample that layer t keeps unshrunk (support selection; 0 when off)."""
        if self.support_selection is None:
            return 0
        increment, maximum = self.support_selection
        return int(round(min(increment * (t + 1), maximum) * self.operator.n))

    def forward(self, y, n_steps: int | None = None) -> torch.Tensor:
        """Run the first ``n_steps`` layers (default all T) from :math:`x_0 = 0`.

        Args:
            y: observations, shape ``(m,)`` or ``(batch, m)``.
            n_steps: ``0 <= n_steps <= T``.

        Returns:
            :math:`x_{n\\_steps}`, shape ``(n,)`` or ``(batch, n)``.
        """
        y = _check_batch(y, "y", self.operator.m, self.steps)
        return self._unroll(y, _check_n_steps(n_steps, self.T, self.T))

    def _data_loss(self, x_true: torch.Tensor, y: torch.Tensor, n_layers: int):
        """MSE of :math:`x_{n\\_layers}(y)` against ``x_true``."""
        return (self._unroll(y, n_layers) - x_true).square().mean()

    def extra_repr(self) -> str:
        return (f"T={self.T}, lam={self.lam:g}, learn_thresholds={self.thresholds is not None}, "
                f"support_selection={self.support_selection}")
