"""The LSQ training recipe: fine-tune a quantized model from its full-precision weights.

Recipe (Esser et al. 2020, section 3): SGD with momentum 0.9, softmax cross-entropy, cosine
learning-rate decay without restarts, weight decay ``1e-4`` at 4 and 8 bits, lowered to ``5e-5`` at
3 bits and ``2.5e-5`` at 2 bits; step sizes train with the same learning rate (their gradient is
already scaled by ``g``) and, here, without weight decay. Optional knowledge distillation uses a
full-precision teacher at temperature 1, with the standard and distillation losses weighted 1:1.

Training checkpoints after every epoch (through :mod:`stepsize._checkpoint`: ``weights_only``
loading, a content hash, atomic writes) and resumes from the checkpoint; the data order of each
epoch depends only on ``(seed, epoch)`` and the checkpoint holds torch's global RNG state (which
Dropout draws from), so an interrupted and resumed run equals an uninterrupted one (under
torch.distributed the state saved is rank 0's, so there resumed dropout masks differ). The
checkpoint records every setting that changes the result, including fingerprints of the data, the
model's structure and the teacher, and refuses to resume a run with other ones. Under
``torch.distributed`` the model is wrapped in DDP, each process takes its share of every epoch's
permutation, and only rank 0 writes the checkpoint.

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stepsize._checkpoint import (
    check_checkpoint_path,
    fingerprint,
    load_checkpoint,
    module_fingerprint,
    restoring,
    save_checkpoint,
)
from stepsize._progress import progress_bar
from stepsize._validation import check_choice, check_int, check_real, describe
from stepsize.quantization.layers import quant_layers, step_size_parameters

__all__ = ["TrainingResult", "default_weight_decay", "evaluate", "train_model"]

_CHECKPOINT_KIND = "stepsize.quantization.train_model"


def default_weight_decay(bits: int | None) -> float:
    """The paper's weight decay: 1e-4 (full precision, 4 and 8 bits), 5e-5 (3), 2.5e-5 (2).

    >>> default_weight_decay(2), default_weight_decay(4)
    (2.5e-05, 0.0001)
    """
    return {2: 2.5e-5, 3: 5e-5}.get(bits, 1e-4)


@dataclass
class TrainingResult:
    """Outcome of :func:`train_model`.

    Attributes:
        epochs: epochs completed (including those of a resumed checkpoint).
        steps: optimizer steps completed.
        losses: mean training loss of each epoch.
        resumed_from_epoch: the epoch the run resumed from (0 for a fresh run).
        checkpoint: the checkpoint path, if any.
    """

    epochs: int
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from_epoch: int = 0
    checkpoint: Path | None = None


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_data(data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name} must be a pair (inputs, targets) of tensors, got {describe(data)}")
    inputs, targets = data
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"{name} must hold torch tensors, got {describe(inputs)}, {describe(targets)}"
        )
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(
            f"{name} needs as many targets as inputs (> 0), got {len(inputs)} and {len(targets)}"
        )
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name} inputs must be finite, but they hold NaN or inf")
    return inputs, targets.long()


def _epoch_batches(count: int, batch_size: int, seed: int, epoch: int, rank: int, world: int):
    """This process's index batches for ``epoch``: a permutation seeded by ``(seed, epoch)``,
    padded to a multiple of the world size (as DistributedSampler does) and strided by rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator)
    padding = (-count) % world
    if padding:
        order = torch.cat([order, order[:padding]])
    return order[rank::world].split(batch_size)


def _rng_state() -> dict:
    """torch's global generator states (CPU, and CUDA if initialized) as plain tensors.

    Dropout, stochastic depth and any other random module draw from them, so a resumed run
    needs them to continue exactly as an uninterrupted one (the data order has its own seeded
    generator).
    """
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict | None) -> None:
    if state is None:  # a checkpoint written before the RNG state was saved
        return
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    steps = {id(p) for p in step_size_parameters(model)}
    rest = [p for p in model.parameters() if id(p) not in steps and p.requires_grad]
    return [
        {"params": rest, "weight_decay": weight_decay},
        {"params": [p for p in model.parameters() if id(p) in steps], "weight_decay": 0.0},
    ]


def _loss(logits, targets, teacher_logits, temperature):
    loss = F.cross_entropy(logits, targets)
    if teacher_logits is None:
        return loss
    distill = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * temperature**2
    return 0.5 * loss + 0.5 * distill


def train_model(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float | None = None,
    schedule: str = "cosine",
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    seed: int = 0,
    callback: Callable[[int, nn.Module], None] | None = None,
    progress: bool | None = None,
) -> TrainingResult:
    """Train ``model`` (full precision or quantized) on ``data`` with the LSQ recipe.

    The learning rate at step ``t`` of ``T`` is ``lr (1 + cos(pi t / T)) / 2`` (``schedule=
    "cosine"``) or ``lr`` (``"constant"``); step sizes get no weight decay.

    Args:
        model: the model, trained in place; under torch.distributed it is wrapped in DDP.
        data: ``(inputs, targets)`` tensors on the model's device; targets are class indices.
        epochs: number of epochs (>= 1).
        lr: initial learning rate (> 0); the paper uses 0.01 for 2-4 bits, 0.001 for 8 bits.
        batch_size: examples per step and per process.
        optimizer: ``"sgd"`` (the paper's, with ``momentum``) or ``"adam"`` (the control of the
            gradient-scale ablation: Adam cancels a constant gradient factor).
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 weight decay on all parameters but step sizes; default
            :func:`default_weight_decay` of the lowest bit width in the model.
        schedule: ``"cosine"`` or ``"constant"``.
        teacher: a full-precision model for knowledge distillation (optional).
        temperature: distillation temperature.
        checkpoint: file written (atomically) after every epoch; with ``resume`` an existing one
            is loaded and training continues from its epoch.
        resume: resume from ``checkpoint`` if it exists. Its settings must match: every argument
            above but ``model``'s weights, ``callback`` and ``progress``, with ``data`` and
            ``teacher`` compared by content hash and ``model`` by structure (layers, sizes, bit
            widths, dtypes); the world size too.
        seed: seed of the data order.
        callback: called as ``callback(step, model)`` after every optimizer step.
        progress: show a progress bar (None: only on a terminal).

    Returns:
        A :class:`TrainingResult`.

    Raises:
        ValueError: for a bad argument, or a checkpoint that is corrupt, foreign, or written with
            other settings (the message names the file and the settings that differ).
        FloatingPointError: if the loss becomes NaN or infinite (the message says where).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from stepsize.quantization import quantize_model
        >>> torch.manual_seed(0) and None
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), 4)
        >>> train_model(net, (x, y), epochs=3, lr=0.05, batch_size=16, progress=False).steps
        12

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020, section 3.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    inputs, targets = _check_data(data, "data")
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_real(lr, "lr", low=0, low_inclusive=False)
    batch_size = check_int(batch_size, "batch_size", low=1)
    check_choice(optimizer, "optimizer", ("sgd", "adam"))
    momentum = check_real(momentum, "momentum", low=0, high=1, high_inclusive=False)
    check_choice(schedule, "schedule", ("cosine", "constant"))
    temperature = check_real(temperature, "temperature", low=0, low_inclusive=False)
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module or None, got {describe(teacher)}")
    seed = check_int(seed, "seed", low=0)
    checkpoint_path = check_checkpoint_path(checkpoint)
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {describe(resume)}")
    base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if weight_decay is None:
        bits = [layer.weight_quantizer.bits for _, layer in quant_layers(base)]
        weight_decay = default_weight_decay(min(bits) if bits else None)
    weight_decay = check_real(weight_decay, "weight_decay", low=0)

    rank, world = _distributed()
    network = model
    if world > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        network = nn.parallel.DistributedDataParallel(base)
    groups = _parameter_groups(base, weight_decay)
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(groups, lr=lr)

    result = TrainingResult(epochs=0, steps=0, checkpoint=checkpoint_path)
    if checkpoint_path is not None:
        settings = dict(
            epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, seed=seed, world_size=world,
            examples=len(inputs), data=fingerprint(inputs, targets),
            model=module_fingerprint(base, weights=False), temperature=temperature,
            teacher=None if teacher is None else module_fingerprint(teacher, weights=True),
        )
        if resume and checkpoint_path.exists():
            state = load_checkpoint(checkpoint_path, kind=_CHECKPOINT_KIND, settings=settings)
            with restoring(checkpoint_path):
                base.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                result.epochs, result.steps = int(state["epoch"]), int(state["step"])
                result.losses = [float(loss) for loss in state["losses"]]
                _set_rng_state(state.get("rng"))
            result.resumed_from_epoch = result.epochs

    batches_per_epoch = len(_epoch_batches(len(inputs), batch_size, seed, 0, rank, world))
    total_steps = epochs * batches_per_epoch
    teacher_mode = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    bar = progress_bar(range(result.epochs, epochs), progress=progress if rank == 0 else False,
                       desc="train", unit="epoch")
    for epoch in bar:
        network.train()
        total, count = 0.0, 0
        for index in _epoch_batches(len(inputs), batch_size, seed, epoch, rank, world):
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * result.steps / total_steps))
            batch, labels = inputs[index], targets[index]
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(batch)
            loss = _loss(network(batch), labels, teacher_logits, temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, step "
                    f"{result.steps + 1} (lr {opt.param_groups[0]['lr']:.3g}); lower lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            result.steps += 1
            total += loss.item() * len(index)
            count += len(index)
            if callback is not None:
                callback(result.steps, base)
        result.losses.append(total / count)
        result.epochs = epoch + 1
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
        if checkpoint_path is not None:
            if rank == 0:
                state = dict(epoch=result.epochs, step=result.steps, losses=result.losses,
                             model=base.state_dict(), optimizer=opt.state_dict(),
                             rng=_rng_state())
                save_checkpoint(checkpoint_path, kind=_CHECKPOINT_KIND, settings=settings,
                                state=state)
            if world > 1:
                torch.distributed.barrier()
    if teacher is not None:
        teacher.train(teacher_mode)
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``(inputs, targets)``, in [0, 1].

    >>> import torch
    >>> evaluate(torch.nn.Identity(), (torch.eye(3), torch.tensor([0, 1, 0])))
    0.6666666666666666
    """
    inputs, targets = _check_data(data, "data")
    batch_size = check_int(batch_size, "batch_size", low=1)
    mode = model.training
    model.eval()
    correct = sum(
        int((model(x).argmax(dim=1) == y).sum())
        for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True)
    )
    model.train(mode)
    return correct / len(inputs)
