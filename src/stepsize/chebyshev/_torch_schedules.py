r"""``ChebyshevLR``: Chebyshev steps as a ``torch.optim.lr_scheduler.LRScheduler``.

Kept out of ``stepsize.chebyshev``'s import so that the numpy-only subpackage never imports torch;
``stepsize.chebyshev.ChebyshevLR`` loads this module on first access.

References: S. Takabe and T. Wadayama, arXiv:2001.05142; N. Agarwal, S. Goel and C. Zhang,
"Acceleration via Fractal Learning Rate Schedules", ICML 2021 (arXiv:2103.01338).
"""

from __future__ import annotations

from typing import Any

try:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ChebyshevLR needs PyTorch, which is not installed; install the extra with "
        "pip install 'stepsize[torch]'"
    ) from exc

from stepsize.chebyshev.schedules import chebyshev_schedule

__all__ = ["ChebyshevLR"]

# Everything the schedule is rebuilt from after load_state_dict.
_SETTINGS = ("lmin", "lmax", "T", "order", "cycle")


class ChebyshevLR(LRScheduler):
    r"""Set every parameter group's learning rate to the Chebyshev step of the current step.

    After ``k`` calls of :meth:`step` (one per ``optimizer.step()``, as for every torch
    scheduler), each group's ``lr`` is :math:`\eta_k = ` ``chebyshev_schedule(lmin, lmax, T,
    order, cycle=cycle)(k)``; the first ``optimizer.step()`` uses :math:`\eta_0`.

    The learning rate is **absolute**: the Chebyshev steps are step sizes for a Hessian spectrum
    in ``[lmin, lmax]``, so the ``lr`` the optimizer was built with is replaced (it is kept in
    ``base_lrs``, unused). To rescale, change ``lmin`` and ``lmax``: dividing both by ``c``
    multiplies every step by ``c``. With plain ``torch.optim.SGD`` (no momentum, no weight
    decay) on a quadratic this is exactly gradient descent with Chebyshev steps.

    Args:
        optimizer: the wrapped optimizer.
        lmin, lmax: bounds of the Hessian spectrum, ``0 < lmin <= lmax``.
        T: the period, ``T >= 1``.
        order: step order, ``"fractal"`` (default), ``"zigzag"``, ``"descending"``,
            ``"natural"``.
        cycle: repeat the period (default). If False, stepping past ``T`` steps raises a
            ``ValueError`` (see :func:`~stepsize.chebyshev.schedules.chebyshev_schedule`).
        last_epoch: as in torch; ``-1`` starts a fresh schedule.

    ``state_dict()`` holds only plain values (no function), so it saves with ``torch.save`` and
    loads with ``weights_only=True``; ``load_state_dict`` restores the settings and the step count
    and rebuilds the schedule from them.

    >>> import torch
    >>> w = torch.zeros(2, requires_grad=True)
    >>> optimizer = torch.optim.SGD([w], lr=1.0)
    >>> scheduler = ChebyshevLR(optimizer, 1.0, 3.0, T=2, order="natural")
    >>> lrs = []
    >>> for _ in range(3):
    ...     lrs.append(round(optimizer.param_groups[0]["lr"], 4))
    ...     optimizer.step()
    ...     scheduler.step()
    >>> lrs
    [0.3694, 0.7735, 0.3694]

    References: Takabe & Wadayama, arXiv:2001.05142; Agarwal, Goel & Zhang, ICML 2021.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lmin: float,
        lmax: float,
        T: int,
        order: str = "fractal",
        *,
        cycle: bool = True,
        last_epoch: int = -1,
    ) -> None:
        self._schedule = chebyshev_schedule(lmin, lmax, T, order, cycle=cycle)
        self.lmin, self.lmax, self.T = float(lmin), float(lmax), int(T)
        self.order, self.cycle = order, cycle
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        value = self._schedule(self.last_epoch)
        return [value] * len(self.optimizer.param_groups)

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "_schedule"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = [key for key in _SETTINGS if key not in state_dict]
        if missing:
            raise KeyError(f"state_dict is not a ChebyshevLR state: it lacks {missing}")
        super().load_state_dict(state_dict)
        self._schedule = chebyshev_schedule(self.lmin, self.lmax, self.T, self.order,
                                            cycle=self.cycle)

    def extra_repr(self) -> str:
        return (f"lmin={self.lmin!r}, lmax={self.lmax!r}, T={self.T}, order={self.order!r}, "
                f"cycle={self.cycle}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
