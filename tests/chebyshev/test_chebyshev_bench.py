"""Smoke test of the chebyshev benchmark on a tiny configuration (no timing asserted)."""

import numpy as np
import pytest

pytest.importorskip("pyamg")

from stepsize.benchmarks.chebyshev import dense_problem, run, sparse_problem  # noqa: E402


def test_problem_generators_have_requested_condition_number():
    dense = np.linalg.eigvalsh(dense_problem(60, 100.0, 0))
    assert dense[-1] / dense[0] == pytest.approx(100.0, rel=1e-8)
    sparse = np.linalg.eigvalsh(sparse_problem(12, 30.0).toarray())
    assert sparse[-1] / sparse[0] == pytest.approx(30.0, rel=1e-8)


def test_tiny_benchmark_runs_and_every_solver_reaches_tolerance():
    config = {"dense_n": [60], "grids": [8], "kappas": [30], "rhs": [1, 3], "dtypes": ["float64"],
              "repeats": 1, "periods": [64], "rate_n": 60,
              "threads": 1}
    result = run(config, seed=0)
    methods = {row["method"] for row in result["rows"]}
    assert {"chebyshev_gd", "semi_iterative", "gd", "cg_ours", "scipy_cg",
            "pyamg_chebyshev"} <= methods
    for row in result["rows"]:
        if row["method"] in ("chebyshev_gd", "semi_iterative", "cg_ours", "scipy_cg"):
            assert row["converged"], row
            assert row["relative_error"] < 1e3 * row["tol"], row
    fractal = [row for row in result["rate_rows"] if row["order"] == "fractal"]
    assert fractal and all(row["stable"] for row in fractal)
    assert all(abs(row["rate_gap"]) < 0.03 for row in fractal)
