"""The registered "lsq" experiment and benchmark run end to end on tiny configurations."""

import math

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mnist1d")


def test_experiment_fields_and_plots(tmp_path):
    from stepsize._registry import EXPERIMENTS

    entry = EXPERIMENTS.get("lsq")
    config = dict(entry.quick, datasets=["digits"], width=0.25, fp_epochs={"digits": 2},
                  quant_epochs={"digits": 1},
                  ablation={"dataset": "digits", "epochs": 1, "log_every": 5},
                  init_study={"dataset": "digits", "bits": [2], "seeds": 1, "epochs": 1})
    result = entry.run(config, 0)
    digits = result["results"]["digits"]
    assert set(digits["bits"]) == {"8", "4", "3", "2"}
    for cell in digits["bits"].values():
        assert 0.0 <= cell["accuracy"]["mean"] <= 1.0 and cell["accuracy"]["std"] == 0.0
        assert cell["fp_accuracy"] == digits["fp_accuracy"] > 0.5
        assert cell["integer_agreement"] >= 0.99
    lsq = result["gradient_scale_ablation"]["conditions"]["1/sqrt(N Q_P) [sgd]"]
    assert lsq["median_R"] and all(r > 0 for r in lsq["median_R"].values())
    unscaled = result["gradient_scale_ablation"]["conditions"]["1, lr 1e-4 [sgd]"]
    # without g the step moves far faster, relative to the weights, than with it
    assert math.prod(unscaled["median_R"].values()) > math.prod(lsq["median_R"].values())
    assert len(result["tables"]) == 3
    paths = entry.plot(result, tmp_path)
    assert [p.name for p in paths] == ["lsq_accuracy_vs_bits.png", "lsq_update_ratio.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_benchmark_compares_the_peers(tmp_path):
    pytest.importorskip("mlxtend")
    from stepsize._registry import BENCHMARKS

    entry = BENCHMARKS.get("lsq")
    config = dict(entry.quick, width=0.25, train=500, fp_epochs=1, timing_steps=3)
    result = entry.run(config, 0)
    cells = result["results"]["4"]
    assert cells["ours"]["time_ratio_vs_ours"] == 1.0
    for name in ("torch native", "brevitas"):
        if name in cells:
            assert cells[name]["gradient_parity_max_rel_error"] < 1e-3
            assert abs(cells[name]["accuracy"] - cells["ours"]["accuracy"]) < 0.05
    assert entry.plot(result, tmp_path)[0].exists()
