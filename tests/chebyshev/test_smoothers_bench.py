"""The smoothers benchmark, tiny configuration: real factors and deviations, no time asserted."""

import numpy as np
import pytest

pytest.importorskip("pyamg")

from stepsize.benchmarks.smoothers import convergence_factor, plot, run  # noqa: E402

TINY = {"poisson_2d": 24, "poisson_3d": 8, "elasticity": 8, "examples": ["unit_cube"],
        "degrees": [3], "cycles": 12, "repeats": 1, "min_seconds": 0.001, "threads": 1,
        "stability_grid": 12, "stability_degrees": [3, 32]}


@pytest.fixture(scope="module")
def result():
    return run(TINY, seed=0)


def test_factors_are_contractions_and_ours_matches_pyamg_on_poisson(result):
    rows = result["rows"]
    assert [r["problem"] for r in rows] == [
        "poisson 2-D 24x24", "poisson 3-D 8^3", "elasticity 2-D 8x8", "unit_cube"]
    for row in rows:
        for label in ("pyamg", "ours", "ours (D=I)"):
            assert 0 < row["factor"][label] < 1, (row["problem"], label)
        assert row["cpu_ratio"] == pytest.approx(
            row["cpu_per_cycle"]["ours"] / row["cpu_per_cycle"]["pyamg"], rel=1e-15)
        assert row["wall_ratio"] == pytest.approx(
            row["wall_per_cycle"]["ours"] / row["wall_per_cycle"]["pyamg"], rel=1e-15)
    for row in rows[:2]:  # constant diagonal: Jacobi only rescales, as does pyamg's own rho
        for label in ("ours", "ours (D=I)"):
            assert row["factor"][label] == pytest.approx(row["factor"]["pyamg"], rel=0.02)


def test_factors_are_reproducible_for_a_seed(result):
    again = run({**TINY, "examples": [], "stability_degrees": [3]}, seed=0)
    assert [r["factor"] for r in again["rows"]] == [r["factor"] for r in result["rows"][:3]]


def test_goal_column_follows_the_stated_tolerances(result):
    # the goal, as the docs state it: factor <= 1.005 x pyamg's, CPU time per cycle <= 1.2x
    table = result["tables"][0]
    goal = table["columns"].index("goal")
    met = 0
    for row, cells in zip(result["rows"], table["rows"], strict=True):
        cpu = row["cpu_per_cycle"]["ours"] / row["cpu_per_cycle"]["pyamg"]
        expected = row["factor"]["ours"] <= 1.005 * row["factor"]["pyamg"] and cpu <= 1.2
        assert row["goal"] is expected
        assert cells[goal] == ("met" if expected else "MISSED")
        met += expected
    assert result["goal_met"] == {"rows": 4, "met": met}
    assert f"met in {met} of 4 rows" in table["title"]
    assert "1.005 x pyamg's" in table["title"] and "<= 1.2x pyamg's" in table["title"]


def test_fractal_order_stays_exact_where_pyamg_horner_does_not(result):
    by_degree = {r["degree"]: r["deviation"] for r in result["stability_rows"]}
    assert by_degree[3]["float64 pyamg Horner"] < 1e-13  # same polynomial at low degree
    assert by_degree[32]["float64 fractal"] < 1e-12
    assert by_degree[32]["float64 pyamg Horner"] > 1e-3
    assert by_degree[32]["float32 fractal"] < 1e-5


def test_convergence_factor_is_the_geometric_mean_of_residual_ratios():
    class Recorded:  # a solver whose residuals halve per cycle, down to round-off at cycle 40
        def solve(self, b, x0, tol, maxiter, residuals):
            residuals.extend(0.5 ** min(k, 40) for k in range(maxiter + 1))

    # the last residual above 1e-11 is 0.5^36 = 1.5e-11; the plateau would give 0.5^(40/60)
    assert convergence_factor(Recorded(), np.ones(3), 60) == pytest.approx(0.5)
    assert convergence_factor(Recorded(), np.ones(3), 5) == pytest.approx(0.5)


def test_plot_writes_one_png(result, tmp_path):
    paths = plot(result, tmp_path)
    assert [p.name for p in paths] == ["bench_smoothers.png"] and paths[0].stat().st_size > 0
