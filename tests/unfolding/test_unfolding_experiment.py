"""The `dugd` experiment end to end on a tiny budget: fields, reference values, plots, JSON."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from stepsize._registry import EXPERIMENTS  # noqa: E402
from stepsize.report import write_json  # noqa: E402


def test_dugd_experiment_tiny_budget(tmp_path):
    entry = EXPERIMENTS.get("dugd")
    assert entry.quick["steps_per_generation"] == 500
    assert entry.full["stochastic_batch_size"] == 10000
    config = {
        **entry.quick, "generations": 3, "steps_per_generation": 20, "test_samples": 200,
        "stochastic_batch_size": 50, "stochastic_steps_per_generation": 5,
        "dense_batch_size": 20, "dense_steps_per_generation": 2,
    }
    result = entry.run(config, 0)
    assert len(result["learned_steps"]) == 25
    assert len(result["generation_loss"]) == 3 == len(result["spectral_radius"])
    assert result["spectral_radius"][0] > result["spectral_radius"][-1]
    assert set(result["mse_at_T"]) >= {
        "dugd", "gd", "chebyshev", "dugd_from_chebyshev", "non_incremental", "dugd_dense",
    }
    # training-independent rows: GD and Chebyshev steps on 200 x 300 test entries (note 3)
    assert result["mse_at_T"]["gd"] == pytest.approx(1.048e-3, rel=0.1)
    assert result["mse_at_T"]["chebyshev"] == pytest.approx(2.45e-8, rel=0.1)
    assert result["expected_mse_at_T"]["notebook_steps"] == pytest.approx(3.883e-7, rel=2e-3)
    assert result["instance"]["lmin"] == pytest.approx(0.184191, abs=1e-6)
    # training-independent: the notebook's sorted steps lie within 2.5% of the Chebyshev steps
    # on ranks 11-24 (the research note), 2.33% here
    assert result["sorted_rank_match_notebook"] == pytest.approx(0.0233, abs=5e-4)
    assert result["dense"]["dtype"] == "float32"
    assert result["non_incremental_spread"] == 0.0
    path = write_json(tmp_path / "dugd.json", result)
    assert json.loads(path.read_text())["mse_at_T"]["gd"] == pytest.approx(
        result["mse_at_T"]["gd"]
    )
    plots = entry.plot(result, tmp_path)
    assert len(plots) == 3 and all(p.exists() and p.stat().st_size > 1000 for p in plots)
    assert np.all(np.isfinite(result["learned_steps"]))
