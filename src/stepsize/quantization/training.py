"""The LSQ training recipe: fine-tune a quantized model from its full-precision weights.

Recipe (Esser et al. 2020, section 3): SGD with momentum 0.9, softmax cross-entropy, cosine
learning-rate decay without restarts, weight decay ``1e-4`` at 4 and 8 bits, lowered to ``5e-5`` at
3 bits and ``2.5e-5`` at 2 bits; step sizes train with the same learning rate (their gradient is
already scaled by ``g``) and, here, without weight decay. Optional knowledge distillation uses a
full-precision teacher at temperature 1, with the standard and distillation losses weighted 1:1.

Data is a pair of tensors, a map-style ``Dataset`` of ``(input, target)`` items or a
``DataLoader`` yielding ``(inputs, targets)`` batches; the loss is any ``loss_fn(outputs,
targets)`` (cross-entropy by default); optional autocast and gradient accumulation.

Training checkpoints after every epoch (through :mod:`stepsize._checkpoint`: ``weights_only``
loading, a content hash, atomic writes) and resumes from the checkpoint; the data order of each
epoch depends only on ``(seed, epoch)`` (with ``seed=None``, an int drawn once and kept in the
checkpoint; a DataLoader's own sampler draws from torch's global
generator or its own, both saved). Dropout and other random modules draw from torch's global
generators, which a run with a given ``seed`` seeds from it (and gives back to the caller
unchanged when it ends; with ``seed=None`` they are used as the caller left them) and the
checkpoint saves, so two runs with the same seed are equal whatever the caller's global state,
and an interrupted and resumed run equals an uninterrupted one (under
torch.distributed the state saved is rank 0's, so there resumed dropout masks differ). The
checkpoint records every setting that changes the result, including fingerprints of the data, the
model's structure and the teacher, and refuses to resume a run with other ones; ``epochs`` is not
one of them, so a finished run resumed with more epochs is extended. Under ``torch.distributed``
the model is wrapped in DDP, each process takes its share of every epoch's permutation, and only
rank 0 writes the checkpoint.

Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from stepsize._results import TrainingProgress, TrainingResult
from stepsize._validation import (
    check_callback,
    check_choice,
    check_int,
    check_progress,
    check_real,
    describe,
)
from stepsize.quantization._onnx_integer import OutputQuantizer
from stepsize.quantization.layers import quant_layers, step_size_parameters
from stepsize.quantization.quantizer import LSQQuantizer

__all__ = [
    "TrainingOptions",
    "TrainingProgress",
    "default_weight_decay",
    "evaluate",
    "train_model",
]

_CHECKPOINT_KIND = "stepsize.quantization.train_model"
#: why a checkpoint may disagree on ``ste`` (the band ``quantize_model`` uses changed once)
_STE_HINT = (" (quantize_model's default straight-through band is 'rounded' since 0.3.0: "
             "convert with ste='paper' to resume a run of an earlier version)")
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def default_weight_decay(bits: int | None) -> float:
    """The paper's weight decay: 1e-4 (full precision, 4 and 8 bits), 5e-5 (3), 2.5e-5 (2).

    >>> default_weight_decay(2), default_weight_decay(4)
    (2.5e-05, 0.0001)
    """
    return {2: 2.5e-5, 3: 5e-5}.get(bits, 1e-4)


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _epoch_batches(count: int, batch_size: int, seed: int, epoch: int, rank: int, world: int):
    """This process's index batches for ``epoch``: a permutation seeded by ``(seed, epoch)``,
    padded to a multiple of the world size (as DistributedSampler does) and strided by rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator)
    padding = (-count) % world
    if padding:
        order = torch.cat([order, order[:padding]])
    return order[rank::world].split(batch_size)


def _is_dataset(data) -> bool:
    return (hasattr(data, "__getitem__") and hasattr(data, "__len__")
            and not isinstance(data, (str, bytes, torch.Tensor, tuple, list, dict)))


class _Data:
    """``(inputs, targets)`` batches from a pair of tensors, a map-style Dataset or a DataLoader.

    A pair is indexed directly and a Dataset through a DataLoader whose batches are the seeded
    permutation of :func:`_epoch_batches`; a DataLoader is read in its own order (its sampler's
    ``set_epoch`` is called when it has one, as a ``DistributedSampler`` needs). ``description``
    identifies the data in checkpoint settings: the content hash of a pair; the length, type and
    a hash of the first and last items of a Dataset (hashing all of it would read it whole).
    """

    def __init__(self, data, name: str, *, classify: bool):
        self.name, self.classify = name, classify
        self.loader = data if isinstance(data, torch.utils.data.DataLoader) else None
        self.dataset = None
        if self.loader is not None:
            self.description = "loader:" + self._describe_dataset(data.dataset) + (
                f":batch={data.batch_size}:sampler={type(data.sampler).__name__}"
                f":drop_last={data.drop_last}")
        elif isinstance(data, (tuple, list)):
            self.inputs, self.targets = self._check_pair(data)
            self.description = "pair:" + fingerprint(self.inputs, self.targets)
        elif _is_dataset(data):
            if len(data) == 0:
                raise ValueError(f"{name} must not be an empty Dataset")
            self.dataset, self.description = data, "dataset:" + self._describe_dataset(data)
        else:
            raise TypeError(f"{name} must be a pair (inputs, targets) of tensors, a map-style "
                            f"Dataset of (input, target) items or a DataLoader, got "
                            f"{describe(data)}")

    def _check_pair(self, data):
        if len(data) != 2:
            raise TypeError(f"{self.name} must be a pair (inputs, targets) of tensors, got a "
                            f"{type(data).__name__} of length {len(data)}")
        inputs, targets = data
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TypeError(f"{self.name} must hold torch tensors, got {describe(inputs)}, "
                            f"{describe(targets)}")
        if len(inputs) != len(targets) or len(inputs) == 0:
            raise ValueError(f"{self.name} needs as many targets as inputs (> 0), got "
                             f"{len(inputs)} and {len(targets)}")
        if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
            raise ValueError(f"{self.name} inputs must be finite, but they hold NaN or inf")
        return inputs, targets

    @staticmethod
    def _describe_dataset(dataset) -> str:
        kind = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        if not _is_dataset(dataset):
            return kind
        if len(dataset) == 0:
            return f"{kind}:0"
        ends = [dataset[0], dataset[len(dataset) - 1]]
        try:
            return f"{kind}:{len(dataset)}:{fingerprint(ends)}"
        except TypeError:  # items that are not plain data: identified by length and type only
            return f"{kind}:{len(dataset)}"

    def _batch(self, item, device) -> tuple[Any, torch.Tensor]:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{self.name} must yield (inputs, targets) pairs, got "
                             f"{describe(item)}")
        inputs, targets = (torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v
                           for v in item)
        targets = targets.to(device, non_blocking=True)
        return inputs.to(device, non_blocking=True), targets.long() if self.classify else targets

    def batches(self, batch_size, seed, epoch, rank, world, device) -> Iterator:
        """This process's batches of ``epoch``, moved to ``device``."""
        if self.loader is not None:
            if hasattr(self.loader.sampler, "set_epoch"):
                self.loader.sampler.set_epoch(epoch)
            source = self.loader
        elif self.dataset is not None:
            order = _epoch_batches(len(self.dataset), batch_size, seed, epoch, rank, world)
            # its own generator: creating the iterator would otherwise draw from torch's
            # global one, which Dropout uses
            source = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=[index.tolist() for index in order],
                generator=torch.Generator())
        else:
            order = _epoch_batches(len(self.inputs), batch_size, seed, epoch, rank, world)
            source = ((self.inputs[index], self.targets[index]) for index in order)
        return (self._batch(item, device) for item in source)

    def in_order(self, batch_size, device) -> Iterator:
        """All batches in data order (for evaluation), moved to ``device``."""
        if self.loader is not None:
            source = self.loader
        elif self.dataset is not None:
            source = torch.utils.data.DataLoader(self.dataset, batch_size=batch_size,
                                                 generator=torch.Generator())
        else:
            source = zip(self.inputs.split(batch_size), self.targets.split(batch_size),
                         strict=True)
        return (self._batch(item, device) for item in source)

    def batches_per_epoch(self, batch_size, rank, world) -> int | None:
        if self.loader is not None:
            try:
                return len(self.loader)
            except TypeError:  # an iterable dataset without a length
                return None
        count = len(self.dataset) if self.dataset is not None else len(self.inputs)
        return len(_epoch_batches(count, batch_size, 0, 0, rank, world))

    def generator(self) -> torch.Generator | None:
        """The DataLoader's own generator (its state is checkpointed), if it has one."""
        if self.loader is None:
            return None
        return getattr(self.loader.sampler, "generator", None) or self.loader.generator


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
    """Weight decay on every parameter but the step sizes: the LSQ quantizers' and the
    calibrated output steps of a :func:`~stepsize.quantization.export.deployment_model`."""
    outputs = (p for m in model.modules() if isinstance(m, OutputQuantizer)
               for p in m.parameters(recurse=False))
    steps = {id(p) for p in itertools.chain(step_size_parameters(model), outputs)}
    rest = [p for p in model.parameters() if id(p) not in steps and p.requires_grad]
    return [
        {"params": rest, "weight_decay": weight_decay},
        {"params": [p for p in model.parameters() if id(p) in steps], "weight_decay": 0.0},
    ]


def _distillation(logits, teacher_logits, temperature):
    return F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * temperature**2


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How :func:`train_model` trains: optimizer, schedule, loss, precision (the LSQ recipe).

    Everything here but ``epochs`` is recorded in the checkpoint (a resume with another value is
    refused); ``epochs`` may grow, which extends a finished run. The values are validated when
    the options are built, so a bad one fails before any data is read.

    Attributes:
        epochs: total epochs (>= 1); more than a finished checkpoint holds extends that run (the
            cosine schedule then spans the new total from the step where it resumes).
        lr: initial learning rate (> 0); the paper uses 0.01 for 2-4 bits, 0.001 for 8 bits.
        batch_size: examples per step and process (pairs and Datasets; a DataLoader keeps its
            own).
        optimizer: ``"sgd"`` (with ``momentum`` in [0, 1)) or ``"adam"``.
        momentum: SGD momentum (the paper: 0.9).
        weight_decay: L2 decay of all parameters but step sizes; None: the paper's
            :func:`default_weight_decay` of the lowest bit width in the model.
        schedule: ``"cosine"`` (``lr (1 + cos(pi t / T)) / 2`` at optimizer step t of T) or
            ``"constant"``.
        loss_fn: ``(outputs, targets) -> loss``; None: cross-entropy on class indices.
        accumulate: batches whose gradients are averaged into one optimizer step.
        autocast: None, ``torch.bfloat16`` or ``torch.float16`` (mixed precision; float16 on
            CUDA with a gradient scaler).
        temperature: distillation temperature ``T`` (used with a ``teacher`` only).

    >>> options = TrainingOptions(epochs=3, lr=0.01)
    >>> options.batch_size, options.optimizer, options.schedule
    (128, 'sgd', 'cosine')
    >>> import dataclasses
    >>> dataclasses.replace(options, lr=0.001, epochs=1).lr   # validated again
    0.001
    >>> TrainingOptions(epochs=0, lr=0.01)
    Traceback (most recent call last):
    ValueError: epochs must be >= 1, got 0
    """

    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    accumulate: int = 1
    autocast: torch.dtype | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be None or a callable (outputs, targets) -> loss, got "
                            f"{describe(self.loss_fn)}")
        if self.autocast is not None and self.autocast not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got "
                             f"{self.autocast!r}")
        check_choice(self.optimizer, "optimizer", ("sgd", "adam"))
        check_choice(self.schedule, "schedule", ("cosine", "constant"))
        canonical = {
            "epochs": check_int(self.epochs, "epochs", low=1),
            "lr": check_real(self.lr, "lr", low=0, low_inclusive=False),
            "batch_size": check_int(self.batch_size, "batch_size", low=1),
            "momentum": check_real(self.momentum, "momentum", low=0, high=1,
                                   high_inclusive=False),
            "weight_decay": None if self.weight_decay is None else check_real(
                self.weight_decay, "weight_decay", low=0),
            "accumulate": check_int(self.accumulate, "accumulate", low=1),
            "temperature": check_real(self.temperature, "temperature", low=0,
                                      low_inclusive=False),
        }
        for name, value in canonical.items():  # frozen: set once, here
            object.__setattr__(self, name, value)


# The global generators' seed of a run, apart from the epochs' data-order seeds
# (seed * 1_000_003 + epoch, below 2**64); taken modulo 2**63.
_MODULE_SEED_OFFSET = 2**62
# seeds drawn for seed=None or from a torch.Generator: below 2**40, so that the epoch seeds
# seed * 1_000_003 + epoch stay inside torch.Generator.manual_seed's range
_SEED_BITS = 40


def _data_seed(seed, world: int) -> tuple[int, int | str]:
    """The int that orders the data and how the checkpoint records it: an int as itself, None
    as ``"random"`` (the drawn int is kept in the checkpoint's state) and a
    ``torch.Generator`` (advanced in place) by the fingerprint of its state."""
    if isinstance(seed, torch.Generator):
        description = "generator:" + fingerprint(seed.get_state())
        return int(torch.randint(0, 2**_SEED_BITS, (), generator=seed)), description
    if seed is None:
        if world > 1:
            raise ValueError(f"seed=None draws a data order per process, but torch.distributed "
                             f"runs {world} processes: pass the same int seed in every process")
        generator = torch.Generator()
        generator.seed()  # from the OS's entropy, as unfolding's trainers do for seed=None
        return int(torch.randint(0, 2**_SEED_BITS, (), generator=generator)), "random"
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {describe(seed)}")
    # the epochs' data-order seeds seed * 1_000_003 + epoch must fit torch's 64-bit seeds
    seed = check_int(seed, "seed", low=0, high=(2**64 - 2**20) // 1_000_003)
    return seed, seed


@dataclass
class _Plan:
    """The validated arguments of one :func:`train_model` call (``options.weight_decay`` set)."""

    data: _Data
    options: TrainingOptions
    teacher: nn.Module | None
    seed: int
    seed_record: int | str
    checkpoint: Path | None
    resume: bool
    progress: bool | None
    callback: Callable[[TrainingProgress], None] | None

    def settings(self, base: nn.Module, world: int) -> dict:
        """Every setting that changes the result (``epochs`` excepted: a run can be extended);
        the quantizers' straight-through bands other than the paper's under ``ste`` (absent
        when every band is the paper's, as in checkpoints written before the option)."""
        options = self.options
        loss = None if options.loss_fn is None else getattr(
            options.loss_fn, "__qualname__", type(options.loss_fn).__qualname__)
        bands = sorted({m.ste for m in base.modules() if isinstance(m, LSQQuantizer)} - {"paper"})
        return ({"ste": ",".join(bands)} if bands else {}) | dict(
            lr=options.lr, batch_size=options.batch_size, optimizer=options.optimizer,
            momentum=options.momentum, weight_decay=options.weight_decay,
            schedule=options.schedule, seed=self.seed_record, world_size=world,
            data=self.data.description, model=module_fingerprint(base, weights=False),
            temperature=options.temperature,
            teacher=None if self.teacher is None else module_fingerprint(self.teacher,
                                                                         weights=True),
            loss_fn=loss, accumulate=options.accumulate, autocast=str(options.autocast),
        )


def _plan(model, data, *, options, teacher, seed, checkpoint, resume, progress,
          callback) -> _Plan:
    """Validate every argument of :func:`train_model` once, naming the bad one."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    if not isinstance(options, TrainingOptions):
        raise TypeError(f"options must be a TrainingOptions, e.g. TrainingOptions(epochs=10, "
                        f"lr=0.01), got {describe(options)}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module or None, got {describe(teacher)}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {describe(resume)}")
    if options.weight_decay is None:
        base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        bits = [layer.weight_quantizer.bits for _, layer in quant_layers(base)]
        options = replace(options, weight_decay=default_weight_decay(min(bits) if bits else None))
    seed, seed_record = _data_seed(seed, _distributed()[1])
    return _Plan(
        data=_Data(data, "data", classify=options.loss_fn is None), options=options,
        teacher=teacher, seed=seed, seed_record=seed_record,
        checkpoint=check_checkpoint_path(checkpoint), resume=resume,
        progress=check_progress(progress),
        callback=check_callback(callback, arguments="progress"),
    )


@contextlib.contextmanager
def _in_eval_mode(module: nn.Module | None):
    """``module`` (if any) in eval mode inside, its own mode restored after, even on error."""
    mode = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        if module is not None:
            module.train(mode)


class _Trainer:
    """One :func:`train_model` run: optimizer, checkpoint, epochs."""

    def __init__(self, model: nn.Module, plan: _Plan):
        self.plan, self.options = plan, plan.options
        self.rank, self.world = _distributed()
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        self.base = model.module if ddp else model
        self.network = model
        if self.world > 1 and not ddp:
            self.network = nn.parallel.DistributedDataParallel(self.base)
        options = self.options
        groups = _parameter_groups(self.base, options.weight_decay)
        if options.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum)
        else:
            self.opt = torch.optim.Adam(groups, lr=options.lr)
        reference = next(self.base.parameters(), None)
        self.device = reference.device if reference is not None else torch.device("cpu")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(
            options.autocast == torch.float16 and self.device.type == "cuda"))
        self.result = TrainingResult(losses=[], rounds=0, checkpoint=plan.checkpoint)
        self.settings = plan.settings(self.base, self.world) if plan.checkpoint else None
        # the weights this run starts from: a resume must start from the same ones (or from the
        # checkpoint's own trained weights, when the model is the run's own, extended)
        self.start = (module_fingerprint(self.base, weights=True) if plan.checkpoint
                      else None)
        per_epoch = plan.data.batches_per_epoch(options.batch_size, self.rank, self.world)
        if per_epoch is None and options.schedule == "cosine":
            raise ValueError("schedule='cosine' needs the number of batches per epoch, but the "
                             "DataLoader has no length (pass schedule='constant')")
        self.steps_per_epoch = None if per_epoch is None else -(-per_epoch // options.accumulate)

    def restore(self) -> None:
        """Continue from the checkpoint, if there is one to resume."""
        path, result = self.plan.checkpoint, self.result
        if path is None or not self.plan.resume or not path.exists():
            return
        state = load_checkpoint(path, kind=_CHECKPOINT_KIND, settings=self.settings,
                                hints={"ste": _STE_HINT})
        done = int(state["epoch"])
        if done > self.options.epochs:
            raise ValueError(
                f"epochs={self.options.epochs} is fewer than the {done} epochs already trained in "
                f"checkpoint {path} (pass epochs >= {done}, resume=False, or another file)")
        given, self.start = self.start, state.get("start", self.start)
        with restoring(path):
            self.base.load_state_dict(state["model"])
        if given != self.start and given != module_fingerprint(self.base, weights=True):
            warnings.warn(
                f"resuming checkpoint {path}, whose run started from other weights than the "
                "model given (neither its starting nor its trained weights): the checkpoint's "
                "weights replace the model's; pass resume=False to train this model afresh",
                UserWarning, stacklevel=4)
        with restoring(path):
            self.opt.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state.get("scaler") or {})
            result.rounds, result.optimizer_steps = done, int(state["step"])
            result.losses = [float(loss) for loss in state["losses"]]
            result.wall_time_s = float(state.get("wall_time_s", 0.0))
            if state.get("data_seed") is not None:  # seed=None: the order drawn by the run
                self.plan.seed = int(state["data_seed"])
            _set_rng_state(state.get("rng"))
            generator = self.plan.data.generator()
            if generator is not None and state.get("loader_rng") is not None:
                generator.set_state(state["loader_rng"])
        result.resumed_from = done

    def save(self) -> None:
        result, generator = self.result, self.plan.data.generator()
        if self.rank == 0:
            state = dict(epoch=result.rounds, step=result.optimizer_steps, losses=result.losses,
                         model=self.base.state_dict(), optimizer=self.opt.state_dict(),
                         scaler=self.scaler.state_dict(), rng=_rng_state(),
                         wall_time_s=result.wall_time_s, start=self.start,
                         data_seed=self.plan.seed,
                         loader_rng=None if generator is None else generator.get_state())
            save_checkpoint(self.plan.checkpoint, kind=_CHECKPOINT_KIND, settings=self.settings,
                            state=state)
        if self.world > 1:
            torch.distributed.barrier()

    def loss(self, batch, targets) -> torch.Tensor:
        options, teacher = self.options, self.plan.teacher
        autocast = (torch.autocast(self.device.type, dtype=options.autocast) if options.autocast
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.network(batch)
            loss_fn = options.loss_fn or F.cross_entropy
            loss = loss_fn(outputs, targets)
            if teacher is not None:
                with torch.no_grad():
                    teacher_outputs = teacher(batch)
                loss = 0.5 * loss + 0.5 * _distillation(outputs, teacher_outputs,
                                                        options.temperature)
        return loss

    def set_learning_rate(self) -> None:
        options = self.options
        if options.schedule == "cosine":
            total = options.epochs * self.steps_per_epoch
            lr = 0.5 * options.lr * (1 + math.cos(math.pi * self.result.optimizer_steps / total))
            for group in self.opt.param_groups:
                group["lr"] = lr

    def step(self, micro_batches: int) -> None:
        """One optimizer step on the gradient summed over ``micro_batches`` backward passes."""
        if micro_batches > 1:  # the mean over the micro-batches, as one larger batch would give
            for group in self.opt.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is not None:
                        parameter.grad.div_(micro_batches)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.result.optimizer_steps += 1

    def epoch(self, epoch: int) -> float:
        """Train one epoch; return its mean loss (weighted by batch size)."""
        plan, total, count, pending = self.plan, 0.0, 0, 0
        self.network.train()
        batches = plan.data.batches(self.options.batch_size, plan.seed, epoch, self.rank,
                                    self.world, self.device)
        for batch, targets in batches:
            if pending == 0:
                self.set_learning_rate()
            loss = self.loss(batch, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, step "
                    f"{self.result.optimizer_steps + 1} (lr {self.opt.param_groups[0]['lr']:.3g})"
                    "; lower lr")
            self.scaler.scale(loss).backward()
            pending += 1
            total += loss.item() * len(targets)
            count += len(targets)
            if pending == self.options.accumulate:
                self.step(pending)
                pending = 0
        if pending:
            self.step(pending)
        if count == 0:
            raise ValueError("data yielded no batch in this epoch")
        return total / count

    def run(self) -> TrainingResult:
        # Random modules (Dropout) draw from torch's global generators. With a given seed they
        # are seeded here from it (a resumed run then restores the checkpoint's state) and
        # restored for the caller afterwards, so the seed decides every draw of the run; with
        # seed=None the run draws from them as the caller left them.
        if self.plan.seed_record == "random":
            self.restore()
            return self._epochs()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        devices = list(range(torch.cuda.device_count())) if cuda else []
        seed = (self.plan.seed * 1_000_003 + _MODULE_SEED_OFFSET) % 2**63
        with torch.random.fork_rng(devices=devices):
            # the generators that fork_rng gives back, not torch.manual_seed (which would also
            # queue a seed for a CUDA not yet initialized, and keep it after the run)
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed_all(seed)
            self.restore()
            return self._epochs()

    def _epochs(self) -> TrainingResult:
        plan, result = self.plan, self.result
        bar = progress_bar(range(result.rounds, self.options.epochs),
                           progress=plan.progress if self.rank == 0 else False,
                           desc="train", unit="epoch")
        with _in_eval_mode(plan.teacher):
            for epoch in bar:
                began = time.perf_counter()
                result.losses.append(self.epoch(epoch))
                result.rounds = epoch + 1
                result.wall_time_s += time.perf_counter() - began
                bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
                if plan.checkpoint is not None:
                    self.save()
                if plan.callback is not None:
                    plan.callback(TrainingProgress(round=result.rounds, loss=result.losses[-1],
                                                   optimizer_steps=result.optimizer_steps,
                                                   model=self.base))
        result.info.update(epochs=self.options.epochs, steps_per_epoch=self.steps_per_epoch,
                           final_lr=self.opt.param_groups[0]["lr"])
        return result


def train_model(
    model: nn.Module,
    data,
    *,
    options: TrainingOptions,
    teacher: nn.Module | None = None,
    seed: int | torch.Generator | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[TrainingProgress], None] | None = None,
) -> TrainingResult:
    """Train ``model`` (full precision or quantized) on ``data`` with the LSQ recipe.

    Optimizer step ``t`` of ``T = epochs * ceil(batches / accumulate)`` uses learning rate
    ``lr (1 + cos(pi t / T)) / 2`` (``schedule="cosine"``) or ``lr`` (``"constant"``); step sizes
    get no weight decay. The loss is ``loss_fn(model(x), y)``, with a teacher
    ``(loss + T^2 KL(softmax(teacher/T) || softmax(model/T))) / 2``.

    Args:
        model: trained in place; under torch.distributed it is wrapped in DDP.
        data: ``(inputs, targets)`` tensors, a map-style Dataset of ``(input, target)`` items
            (both batched by the seeded permutation) or a DataLoader (its own order); batches
            are moved to the model's device.
        options: how to train, a :class:`TrainingOptions` (epochs, lr, batch size, optimizer,
            schedule, weight decay, loss, accumulation, autocast, distillation temperature).
        teacher: a full-precision model for knowledge distillation (kept in eval mode), or None.
        seed: seed of the data order and of random modules such as Dropout: an int, a
            ``torch.Generator`` (advanced in place) or None (the library's default: a fresh
            seed, drawn once per run and kept in the checkpoint, so ``resume`` continues it;
            refused under torch.distributed). A given seed also seeds torch's global generators
            for the run (restored for the caller afterwards); None leaves them as they are.
        checkpoint: file written (atomically) after every epoch.
        resume: continue from ``checkpoint`` if it exists; its settings (``options`` but
            ``epochs``, ``seed``; data, model structure and teacher by hash; the world size)
            must match.
        progress: progress bar (None: only on a terminal).
        callback: ``callback(progress)`` after each epoch's checkpoint, with a
            :class:`stepsize._results.TrainingProgress` (``round``: epochs done,
            ``optimizer_steps``, ``loss``: the epoch's mean loss, ``model``); raising in it stops
            training, resumable from that checkpoint. Per optimizer step: torch's module hooks.

    Returns:
        :class:`stepsize._results.TrainingResult`: ``rounds`` epochs, per-epoch mean ``losses``,
        ``optimizer_steps``, ``wall_time_s``, ``resumed_from``, ``checkpoint``; ``steps`` is None;
        ``info`` holds ``epochs``, ``steps_per_epoch`` and ``final_lr``.

    Raises:
        ValueError: a bad argument, or a checkpoint that is corrupt, foreign, written with other
            settings or holding more epochs (the message names the file and the differences).
        FloatingPointError: if the loss becomes NaN or infinite (the message says where).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from stepsize.quantization import quantize_model
        >>> torch.manual_seed(0) and None
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), 4)
        >>> options = TrainingOptions(epochs=3, lr=0.05, batch_size=16)
        >>> result = train_model(net, (x, y), options=options, progress=False,
        ...                      callback=lambda p: print(p.round, p.optimizer_steps))
        1 4
        2 8
        3 12
        >>> result.rounds, len(result.losses)
        (3, 3)

    Reference: Esser et al., "Learned Step Size Quantization", ICLR 2020, section 3.
    """
    plan = _plan(model, data, options=options, teacher=teacher, seed=seed, checkpoint=checkpoint,
                 resume=resume, progress=progress, callback=callback)
    return _Trainer(model, plan).run()


@torch.no_grad()
def evaluate(model: nn.Module, data, batch_size: int = 1000, *,
             metric: str | Callable[[Any, torch.Tensor], torch.Tensor] = "accuracy") -> float:
    """``metric`` of ``model`` (in eval mode) on ``data``, averaged over examples.

    ``"accuracy"`` is the top-1 accuracy ``mean(argmax model(x) == y)`` in [0, 1]; a callable
    ``metric(outputs, targets)`` returns a batch mean (e.g. ``F.mse_loss``), weighted here by
    the batch size. ``data`` is a pair of tensors, a map-style Dataset or a DataLoader, as in
    :func:`train_model` (taken in order).

    >>> import torch
    >>> evaluate(torch.nn.Identity(), (torch.eye(3), torch.tensor([0, 1, 0])))
    0.6666666666666666
    >>> evaluate(torch.nn.Identity(), (torch.ones(4, 1), torch.zeros(4, 1)),
    ...          metric=torch.nn.functional.mse_loss)
    1.0
    """
    if metric != "accuracy" and not callable(metric):
        raise ValueError(f"metric must be 'accuracy' or a callable, got {metric!r}")
    source = _Data(data, "data", classify=metric == "accuracy")
    batch_size = check_int(batch_size, "batch_size", low=1)
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    mode, total, count = model.training, 0.0, 0
    model.eval()
    try:
        for batch, targets in source.in_order(batch_size, device):
            outputs = model(batch)
            if metric == "accuracy":
                total += float((outputs.argmax(dim=1) == targets).sum())
            else:
                total += float(metric(outputs, targets)) * len(targets)
            count += len(targets)
    finally:
        model.train(mode)
    return total / count
