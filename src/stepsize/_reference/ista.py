"""The sparse-recovery problem of the learned-ISTA literature and its reference solvers, shared by
``stepsize bench ista`` and the tests of :mod:`stepsize.unfolding` (Bernoulli-Gaussian signals,
ISTA and FISTA with step 1/L, NMSE in dB; see :mod:`stepsize.benchmarks.ista`).
"""

from __future__ import annotations

import numpy as np


def bernoulli_gaussian_problem(n: int, m: int, sparsity: float, snr_db: float, seed: int):
    """The operator and a sampler of (x*, y) pairs.

    Returns ``(A, draw, noise_std)``; ``draw(count)`` gives float64 arrays ``x`` (count, n),
    ``y`` (count, m) from the problem's own random stream.

    >>> A, draw, noise_std = bernoulli_gaussian_problem(20, 10, 0.1, 40.0, 0)
    >>> A.shape, round(float(np.linalg.norm(A[:, 0])), 12), round(noise_std, 6)
    ((10, 20), 1.0, 0.004472)
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, n))
    A /= np.linalg.norm(A, axis=0)
    noise_std = float(np.sqrt(sparsity * n / m * 10.0 ** (-snr_db / 10.0)))

    def draw(count: int):
        x = rng.binomial(1, sparsity, size=(count, n)) * rng.normal(size=(count, n))
        y = x @ A.T + noise_std * rng.normal(size=(count, m))
        return x, y

    return A, draw, noise_std


def soft_threshold(v, threshold):
    """sign(v) max(|v| - threshold, 0), entrywise."""
    return np.sign(v) * np.maximum(np.abs(v) - threshold, 0.0)


def ista(A, Y, lam: float, iterations: int, *, accelerated: bool = False) -> np.ndarray:
    """ISTA (or FISTA) with step 1/L on row batches ``Y`` (count, m), from x_0 = 0.

    >>> ista(np.eye(2), np.array([[2.0, 0.25]]), 0.5, 1).tolist()
    [[1.5, 0.0]]
    """
    L = float(np.linalg.eigvalsh(A.T @ A)[-1])
    x = np.zeros((Y.shape[0], A.shape[1]))
    z, t = x, 1.0
    for _ in range(iterations):
        x_new = soft_threshold(z + (Y - z @ A.T) @ A / L, lam / L)
        if accelerated:
            t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            z = x_new + (t - 1.0) / t_new * (x_new - x)
            t = t_new
        else:
            z = x_new
        x = x_new
    return x


def nmse_db(x_hat, x_true) -> float:
    """10 log10(sum ||x_hat - x*||^2 / sum ||x*||^2).

    >>> round(nmse_db(np.array([[1.1, 0.0]]), np.array([[1.0, 0.0]])), 9)
    -20.0
    """
    return float(10.0 * np.log10(np.sum((x_hat - x_true) ** 2) / np.sum(x_true**2)))
