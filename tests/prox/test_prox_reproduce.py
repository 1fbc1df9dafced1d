"""The registered `prox` experiment and benchmark run end to end on tiny configurations."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("cvxpy")
pytest.importorskip("sklearn")

from stepsize._registry import BENCHMARKS, EXPERIMENTS  # noqa: E402
from stepsize.report import to_jsonable  # noqa: E402

TINY_EXPERIMENT = {
    "cvxpy_sizes": [3], "sigmas": [1.0], "cvxpy_instances": 1, "pair_sizes": [4], "pairs": 5,
    "speed_sizes": [10, 120, 150], "speed_instances": 1, "speed_repeats": 1,
    "kkt_max_size": 150, "threads": 1, "mle_sizes": [6], "mle_maxiter": 20000,
}
TINY_BENCHMARK = {
    "compare_size": 6, "compare_instances": 1, "ours_repeats": 2, "peer_repeats": 1,
    "sizes": [100, 120], "size_instances": 1, "size_repeats": 1, "threads": [1],
    "sweep_instances": 10, "ratio_exponents": [-300, -20, 0, 20, 80, 300], "ratio_instances": 1,
    "batch_sizes": [5], "batch_count": 20, "batch_repeats": 1,
}


def test_experiment_runs_and_reports(tmp_path):
    entry = EXPERIMENTS.get("prox")
    result = entry.run(TINY_EXPERIMENT, 0)
    json.dumps(to_jsonable(result), allow_nan=False)
    assert set(result) >= {"time_by_p", "newton_iterations_by_p", "max_kkt_residual",
                           "cvxpy_objective_gap", "mle_objective_gap", "tables"}
    assert result["max_kkt_residual"] <= 1e-9
    assert abs(result["cvxpy_objective_gap"]) <= 1e-7
    assert abs(result["mle_objective_gap"]) <= 1e-6
    assert max(result["newton_iterations_by_p"].values()) <= 8
    special = next(t for t in result["tables"] if t["title"].startswith("Special cases"))
    assert all(row[-1] for row in special["rows"])
    paths = entry.plot(result, tmp_path)
    assert len(paths) == 3 and all(p.exists() for p in paths)


def test_benchmark_runs_and_reports(tmp_path):
    entry = BENCHMARKS.get("prox")
    result = entry.run(TINY_BENCHMARK, 0)
    json.dumps(to_jsonable(result), allow_nan=False)
    ours = result["comparison"]["stepsize prox_matrix_perspective"]
    assert ours["max_kkt"] <= 1e-10
    for name, record in result["comparison"].items():
        assert record["objective_excess"] >= -1e-9, name  # no peer beats the exact prox
    floor = result["eigh_floor"]
    assert set(floor["best_possible_speedup"]) == set(result["comparison"]) - {
        "stepsize prox_matrix_perspective"}
    for name, record in result["robustness"].items():
        assert record["crashes"] == record["nan"] == record["not_converged"] == 0, name
        assert record["max_kkt"] <= 1e-9 and record["max_steps"] <= 16, name
        assert record["asymptote_error"] <= 1e-13, name
    assert result["batch"][5]["max_difference"] <= 1e-10
    assert entry.plot(result, tmp_path)[0].exists()
