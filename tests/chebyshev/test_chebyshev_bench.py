"""The chebyshev benchmark on a tiny configuration: real numbers, no timing asserted."""

import numpy as np
import pytest

pytest.importorskip("pyamg")

from stepsize.benchmarks.chebyshev import (  # noqa: E402
    dense_problem,
    run,
    spd_check,
    true_extremes,
)

TINY = {"examples": ["unit_cube"], "poisson_2d": 12, "poisson_3d": 5, "elasticity": 5,
        "anisotropic": 12, "dense_n": 60, "dense_kappa": 100.0, "diagonal_n": 200, "rhs": 3,
        "batched": None, "tol": 1e-8, "repeats": 1, "fill_s": 0.0, "petsc": False,
        "smoother_grid": 24, "smoother_cycles": 3,
        "kappas": [30], "periods": [64], "rate_n": 60, "dtypes": ["float64"], "threads": 1}


@pytest.fixture(scope="module")
def result():
    return run(TINY, seed=0)


def test_dense_problem_has_requested_condition_number():
    values = np.linalg.eigvalsh(dense_problem(60, 100.0, 0))
    assert values[-1] / values[0] == pytest.approx(100.0, rel=1e-8)


def test_spd_check_sorts_pyamg_examples():
    import scipy.sparse as sp
    from pyamg.gallery import load_example

    def check(name):
        return spd_check(sp.csr_array(load_example(name)["A"]))

    assert check("knot") is None
    assert check("recirc_flow").startswith("not symmetric")
    assert check("unit_square").startswith("singular")
    assert check("helmholtz_2D") == "complex"


def test_true_extremes_match_the_closed_form_laplacian_spectrum():
    import scipy.sparse as sp
    from pyamg.gallery import poisson

    grid = 60  # n = 3600 > 3000: the eigsh path
    lmin, lmax, how = true_extremes(sp.csr_array(poisson((grid, grid))))
    h = np.pi / (grid + 1)
    assert how == "eigsh"
    assert lmin == pytest.approx(4 - 4 * np.cos(h), rel=1e-8)
    assert lmax == pytest.approx(4 - 4 * np.cos(grid * h), rel=1e-8)


def test_single_rhs_rows_converge_with_finite_ratios(result):
    problems = {row["problem"] for row in result["rows"]}
    assert len(problems) == 6  # unit_cube, Poisson 2-D and 3-D, elasticity, anisotropic, dense
    for row in result["rows"]:
        if row["solver"] in ("scipy cg", "chebyshev_gd (ours)"):
            assert row["converged"], row
            assert row["residual"] < 10 * TINY["tol"], row
            assert 0.5 <= row["matvec_ratio"] < 1e3, row
        if row["solver"] == "scipy cg":  # the reference of its group
            assert (row["matvec_ratio"], row["time_ratio"]) == (1.0, 1.0), row
        if row["solver"] in ("splu", "cho_factor/cho_solve"):
            assert row["residual"] < 1e-10, row
            assert (row["M"], row["matvecs"], row["time_ratio"]) == ("-", None, None), row
    skipped = [row for row in result["rows"] if "skipped" in row]
    assert len(skipped) == 5 and all(r["skipped"] == "off in this configuration" for r in skipped)


def _pcg_row(rows, row):
    matches = [r for r in rows if r["solver"] == "scipy cg" and r["problem"] == row["problem"]
               and r["M"] == row["M"]]
    assert len(matches) == 1, row
    return matches[0]


def test_goal_flags_follow_raw_counts_and_the_stated_thresholds(result):
    # the goal, as the issue states it: converged, matvecs <= 1.5x and time <= 2x PCG's
    rows = result["rows"]
    ours = [row for row in rows if row.get("ours")]
    assert len(ours) == 3 * 5 + 2  # three M on the five sparse problems, no AMG on the dense one
    met = 0
    for row in ours:
        pcg = _pcg_row(rows, row)
        matvec_ratio = row["matvecs"] / pcg["matvecs"]
        time_ratio = row["seconds"] / pcg["seconds"]
        assert row["matvec_ratio"] == pytest.approx(matvec_ratio, rel=1e-15)
        assert row["time_ratio"] == pytest.approx(time_ratio, rel=1e-15)
        expected = bool(row["converged"] and matvec_ratio <= 1.5 and time_ratio <= 2.0)
        assert row["goal"] is expected, row
        met += expected
    assert result["goal_met"] == {"rows": 17, "met": met}
    assert f"goal met in {met} of 17 rows" in result["tables"][0]["title"]
    goal = result["tables"][0]["columns"].index("goal")
    cells = [cells[goal] for cells in result["tables"][0]["rows"]]
    assert cells.count("met") == met and cells.count("MISSED") == 17 - met


def test_goal_of_a_constructed_group():
    from stepsize.benchmarks.chebyshev import with_ratios

    pcg = {"matvecs": 40, "seconds": 0.5}
    rows = with_ratios([
        {"matvecs": 60, "seconds": 1.0, "converged": True, "ours": True, "reference": pcg},
        {"matvecs": 61, "seconds": 0.1, "converged": True, "ours": True, "reference": pcg},
        {"matvecs": 20, "seconds": 1.01, "converged": True, "ours": True, "reference": pcg},
        {"matvecs": 20, "seconds": 0.1, "converged": False, "ours": True, "reference": pcg},
        {"matvecs": 40, "seconds": 0.5, "converged": True, "reference": pcg},
    ])
    assert [(r["matvec_ratio"], r["time_ratio"]) for r in rows] == [
        (1.5, 2.0), (1.525, 0.2), (0.5, 2.02), (0.5, 0.2), (1.0, 1.0)]
    assert [r.get("goal") for r in rows] == [True, False, False, False, None]
    assert all("reference" not in r for r in rows)


def test_batched_rows_converge_and_compare_with_the_factorization(result):
    assert len(result["batched_rows"]) == 6 * 5  # (CG, ours) x (none, jacobi) + direct
    for row in result["batched_rows"]:
        assert row["k"] == 3
        assert row["converged"], row
        direct = [r for r in result["batched_rows"]
                  if r["problem"] == row["problem"] and "factor reused" in r["solver"]][0]
        direct_total = direct["setup_s"] + direct["seconds"]
        assert row["time_ratio_vs_direct"] == pytest.approx(
            (row["setup_s"] + row["seconds"]) / direct_total, rel=1e-15)
        if "factor reused" in row["solver"]:
            assert row["residual"] < 1e-10, row
            assert row["time_ratio_vs_direct"] == pytest.approx(1.0)
        else:
            assert row["residual"] <= TINY["tol"], row
            assert row["matvecs_per_rhs"] >= 2, row
            cg = [r for r in result["batched_rows"] if r["problem"] == row["problem"]
                  and r["M"] == row["M"] and r["solver"] == "conjugate_gradient (ours)"][0]
            assert row["time_ratio_vs_cg"] == pytest.approx(row["seconds"] / cg["seconds"],
                                                            rel=1e-15)


def test_estimate_safety_rows_contain_the_spectrum_or_refuse(result):
    rows = result["safety_rows"]
    assert len(rows) == 7  # six problems and the log-spaced diagonal
    diagonal = rows[-1]
    assert diagonal["true_lmin"] == pytest.approx(1e-6, rel=1e-10)
    assert diagonal["true_lmax"] == pytest.approx(1.0, rel=1e-12)
    for row in rows:
        assert row["contains"] in ("yes", "refused"), row
        if row["contains"] == "yes":
            assert row["est_lmin"] <= row["true_lmin"] * (1 + 1e-9)
            assert row["est_lmax"] >= row["true_lmax"] * (1 - 1e-9)


def test_smoother_rows_match_pyamg_convergence(result):
    if result["smoother_rows"] is None:
        pytest.skip(result["smoother_note"])
    by_problem = {}
    for row in result["smoother_rows"]:
        by_problem.setdefault(row["problem"], {})[row["smoother"]] = row["factor"]
    for factors in by_problem.values():
        ours, theirs = factors["chebyshev_smoother (ours)"], factors["pyamg chebyshev"]
        assert 0 < theirs < 1
        assert ours == pytest.approx(theirs, rel=0.05)


def test_rate_table_keeps_the_papers_goal(result):
    fractal = [row for row in result["rate_rows"] if row["order"] == "fractal"]
    assert fractal and all(row["stable"] for row in fractal)
    assert all(abs(row["rate_gap"]) < 0.03 for row in fractal if row["spectrum"] == "exact")
    tables = [t["title"] for t in result["tables"]]
    assert len(tables) == 5 and tables[-1].startswith("Rate and stability")


def test_docstring_examples_of_the_benchmark_helpers():
    import doctest

    import stepsize.benchmarks.chebyshev as module

    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and attempted >= 5
