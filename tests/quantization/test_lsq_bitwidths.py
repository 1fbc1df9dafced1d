# ruff: noqa: NPY002 - the test checks that the legacy global numpy state is left alone
"""Issue 16 item 6: the bit-width reproduction of ``stepsize bench lsq`` (mnist1d generator,
ResNet-8 on MNIST-5k, peers trained with train_model's exact recipe)."""

import copy
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mnist1d")

from torch import nn  # noqa: E402

from stepsize._reference.lsq_data import load_dataset, make_mnist1d  # noqa: E402
from stepsize._reference.lsq_models import small_resnet  # noqa: E402
from stepsize.benchmarks import lsq as bench  # noqa: E402
from stepsize.quantization import quant_layers, quantize_model  # noqa: E402


def test_mnist1d_generator_is_deterministic_and_leaves_global_rngs_alone():
    random.seed(7)
    np.random.seed(7)
    expected_python, expected_numpy = random.random(), np.random.random()
    random.seed(7)
    np.random.seed(7)
    first = make_mnist1d(seed=3, num_samples=100)
    assert (random.random(), np.random.random()) == (expected_python, expected_numpy)
    again = make_mnist1d(seed=3, num_samples=100)
    other = make_mnist1d(seed=4, num_samples=100)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["x_train"], other["x_train"])
    assert first["x_train"].shape == (80, 40) and first["x_test"].shape == (20, 40)
    # ten examples of each digit, split 80/20 after a shuffle
    labels = np.concatenate([first["y_train"], first["y_test"]])
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 10))
    # the generator standardizes the whole set: mean 0, standard deviation 1
    values = np.concatenate([first["x_train"], first["x_test"]])
    assert abs(values.mean()) < 1e-12 and values.std() == pytest.approx(1.0)


def test_mnist1d_dataset_tensors_and_bad_arguments():
    data = load_dataset("mnist1d", {"mnist1d_samples": 100, "mnist1d_seed": 3})
    x, y = data["train"]
    assert x.shape == (80, 1, 40) and x.dtype == torch.float32 and y.dtype == torch.long
    assert data["test"][0].shape == (20, 1, 40)
    np.testing.assert_allclose(float(x.mean()), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(x.std(unbiased=False)), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        make_mnist1d(num_samples=5)
    with pytest.raises(TypeError, match="seed"):
        make_mnist1d(seed=1.5)


def test_small_resnet_layers_and_quantization():
    net = small_resnet(0.5)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # stem, two per block, two projection shortcuts (stages 2 and 3)
    assert len(convs) == 9 and [c.out_channels for c in convs[:1]] == [8]
    assert sorted({c.out_channels for c in convs}) == [8, 16, 32]
    assert all(c.bias is None for c in convs)
    quantized = quantize_model(net, bits=2)
    bits = {name: layer.weight_quantizer.bits for name, layer in quant_layers(quantized)}
    assert len(bits) == 10
    assert bits["0"] == 8 and bits["8"] == 8 and sorted(bits.values()).count(2) == 8
    with pytest.raises(ValueError, match="width"):
        small_resnet(0.0)


def test_peer_training_is_train_models_recipe_step_for_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    ours, peer = copy.deepcopy(net), copy.deepcopy(net)
    bench._fit(ours, (x, y), epochs=3, lr=0.1, batch_size=32, weight_decay=1e-3, seed=5)
    assert bench._train_peer(peer, (x, y), epochs=3, lr=0.1, batch_size=32,
                             weight_decay=1e-3, seed=5)
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(peer.state_dict()[name], value, rtol=0, atol=1e-6)
    assert float((ours[0].weight - net[0].weight).detach().abs().max()) > 1e-2  # it trained
    broken = copy.deepcopy(net)
    with torch.no_grad():
        broken[0].weight.fill_(float("nan"))
    assert not bench._train_peer(broken, (x, y), epochs=1, lr=0.1, batch_size=32,
                                 weight_decay=0.0, seed=0)


def test_twins_start_from_our_steps():
    """Every twin but brevitas' default computes ours' forward at initialization."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 8, 5, stride=2), nn.BatchNorm1d(8), nn.ReLU(),
                        nn.Conv1d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10))
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    methods, missing = bench._bitwidth_methods()
    twins = bench._bitwidth_twins(net.eval(), 2, {"train": (x, y)}, {"batch_size": 32}, 0,
                                  methods)
    with torch.no_grad():
        reference = twins["ours"].eval()(x)
        for name, twin in twins.items():
            if name != "brevitas default":
                torch.testing.assert_close(twin.eval()(x), reference, rtol=1e-4, atol=1e-4,
                                           msg=name)
    assert "torch native" in twins and "ours" in twins
    assert all(isinstance(m, str) for m in missing)


def _cell(mean):
    return {"summary": {"mean": mean, "values": [mean - 0.01, mean, mean + 0.01]}}


def test_two_bit_goal_compares_means_with_every_goal_peer():
    def results(**means):
        return {"mnist1d": {"bits": {"2": {k.replace("_", " "): _cell(v)
                                           for k, v in means.items()}}}}

    met = bench._bitwidth_goal(results(ours=0.80, torch_native=0.80, brevitas=0.79,
                                       torchao=0.95), 3)
    assert met["met"] is True and met["peer_means"] == {"torch native": 0.80, "brevitas": 0.79}
    assert bench._bitwidth_goal(results(ours=0.80, torch_native=0.79, brevitas=0.70,
                                        brevitas_default=0.81), 3)["met"] is False
    assert bench._bitwidth_goal(results(ours=0.80, torch_native=0.79), 3)["met"] is False
    assert bench._bitwidth_goal({"mnist5k": {}}, 3)["met"] is None
    # seed by seed: ours - peer, mean and standard error (paired: same FP weights and steps)
    paired = bench._paired([0.90, 0.92, 0.95], [0.91, 0.90, 0.92])
    assert paired["mean"] == pytest.approx(0.04 / 3)
    assert paired["standard_error"] == pytest.approx(np.std([-0.01, 0.02, 0.03], ddof=1) / 3**0.5)
    assert met["paired"]["torch native"]["mean"] == pytest.approx(0.0)
    # one seed (the quick configuration) decides nothing, either way
    for ours in (0.5, 0.99):
        one = bench._bitwidth_goal(results(ours=ours, torch_native=0.8, brevitas=0.8), 1)
        assert one["met"] is None and "mean over 3" in one["reason"]


def test_bitwidth_section_on_a_tiny_budget(tmp_path):
    config = dict(bench.BITWIDTHS_QUICK, datasets=["mnist1d"], bits=[4, 2], batch_size=64,
                  methods=["torch native"], timing_steps=2,
                  mnist1d={"samples": 600, "width": 0.5, "fp_epochs": 8, "qat_epochs": 1})
    section = bench._bitwidths(config, 0)
    entry = section["results"]["mnist1d"]
    fp = entry["fp_summary"]["mean"]
    assert fp > 0.35  # chance is 0.1
    cells = entry["bits"]
    assert set(cells) == {"4", "2"} and set(cells["4"]) == {"ours", "torch native"}
    for by_method in cells.values():
        for cell in by_method.values():
            assert cell["finished"] == [True] and cell["median_step_s"] > 0
            assert 0.0 <= cell["summary"]["min"] <= cell["summary"]["max"] <= 1.0
    # same FP weights, same initial steps, same data order: 4-bit ours and native stay close
    # and keep most of the FP accuracy
    four = cells["4"]
    assert abs(four["ours"]["summary"]["mean"] - four["torch native"]["summary"]["mean"]) < 0.1
    assert four["ours"]["summary"]["mean"] > fp - 0.15
    goal = section["goal"]
    assert goal["met"] is None and "1 seed(s)" in goal["reason"]  # judged on 3 seeds only
    assert section["missing"] == []  # the peers not chosen are not imported, not "missing"
    table = bench._bitwidth_table(section, config)
    assert len(table["rows"]) == 4 and len(table["columns"]) == 13
    flags = {(row[2], row[3]): row[-1] for row in table["rows"]}
    assert flags[(2, "ours")] == "not judged" and flags[(4, "ours")] == "-"
    path = bench._plot_bitwidths(section, tmp_path)
    assert path.name == "bench_lsq_bitwidths.png" and path.stat().st_size > 1000


def test_configurations_match_the_issue():
    full, quick = bench.FULL["bitwidths"], bench.QUICK["bitwidths"]
    assert full["seeds"] == 3 and full["bits"] == [4, 3, 2] == quick["bits"]
    assert full["datasets"] == ["mnist1d", "mnist5k"] == quick["datasets"]
    with pytest.raises(ValueError, match="unknown bit-width dataset"):
        bench._bitwidth_data_and_model("cifar", {})
