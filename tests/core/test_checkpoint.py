"""The shared checkpoint module: round trip, content hash, hostile files, atomic writes, and the
same guarantees through all three trainers."""

import doctest
import os
import pickle
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import stepsize._checkpoint as checkpoint_module  # noqa: E402
from stepsize._checkpoint import (  # noqa: E402
    FORMAT,
    check_checkpoint_path,
    fingerprint,
    load_checkpoint,
    module_fingerprint,
    save_checkpoint,
)
from stepsize.quantization import TrainingOptions, quantize_model, train_model  # noqa: E402
from stepsize.unfolding import UnfoldedGD, train_expected_loss, train_incremental  # noqa: E402

SETTINGS = {"lr": 0.1, "betas": (0.9, 0.999), "data": "0123abcd", "teacher": None}


def _state():
    net = nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    return {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "losses": [0.5, np.float64(0.25)], "generator": torch.Generator().get_state()}


class _RunsCode:
    """An object whose unpickling runs a shell command (what a planted file would do)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _plant(path, marker, form):
    payload = {"format": FORMAT, "payload": _RunsCode(f"touch {shlex.quote(str(marker))}")}
    if form == "torch zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))


def test_round_trip_is_exact_and_loads_with_plain_weights_only(tmp_path):
    path = tmp_path / "run.pt"
    state = _state()
    save_checkpoint(path, kind="test", settings=SETTINGS, state=state)
    loaded = load_checkpoint(path, kind="test", settings=SETTINGS)
    assert loaded.keys() == state.keys()
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    exp_avg = state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], exp_avg)
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["losses"] == [0.5, 0.25] and type(loaded["losses"][1]) is float
    assert torch.equal(loaded["generator"], state["generator"])
    raw = torch.load(path, weights_only=True)  # no custom object inside
    assert raw["format"] == FORMAT and raw["kind"] == "test" and len(raw["sha256"]) == 64
    assert raw["settings"] == SETTINGS and raw["epoch"] == 3
    # an optimizer restored from it continues exactly like the original
    net, twin = nn.Linear(3, 2), nn.Linear(3, 2)
    net.load_state_dict(state["model"])
    twin.load_state_dict(loaded["model"])
    opt, twin_opt = torch.optim.Adam(net.parameters()), torch.optim.Adam(twin.parameters())
    opt.load_state_dict(state["optimizer"])
    twin_opt.load_state_dict(loaded["optimizer"])
    for model, optimizer in ((net, opt), (twin, twin_opt)):
        model(torch.ones(2, 3)).square().sum().backward()
        optimizer.step()
    assert torch.equal(net.weight, twin.weight)


def test_writes_leave_no_temporary_file_and_replace_the_old_one(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, kind="test", settings=SETTINGS, state={"epoch": 1})
    save_checkpoint(path, kind="test", settings=SETTINGS, state={"epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    assert load_checkpoint(path, kind="test", settings=SETTINGS)["epoch"] == 2


_WRITE_UNDER_A_SIZE_LIMIT = """
import resource, signal, sys, torch
from stepsize._checkpoint import save_checkpoint
path, limit, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, the process lives
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint(path, kind="test", settings={"lr": 0.1}, state={"w": torch.zeros(size)})
except BaseException as exc:
    print(f"{type(exc).__name__}: {exc}")
"""


@pytest.mark.parametrize("limit, size", [
    (512, 2),  # the whole file sits in the stream's buffer: the final flush fails
    (1 << 16, 1 << 20),  # inside torch.save: torch's writer raises RuntimeError, wrapped
], ids=["at the flush", "inside torch.save"])
def test_a_real_write_failure_keeps_the_previous_checkpoint(tmp_path, limit, size):
    """A real half-written file: a child process whose file size limit (RLIMIT_FSIZE) cuts the
    temporary file short, as a full disk would; nothing in the library is replaced."""
    pytest.importorskip("resource")  # POSIX only
    path = tmp_path / "run.pt"
    save_checkpoint(path, kind="test", settings={"lr": 0.1}, state={"w": torch.ones(2)})
    before = path.read_bytes()
    full = tmp_path / "full" / "run.pt"  # the same checkpoint without the limit
    full.parent.mkdir()
    save_checkpoint(full, kind="test", settings={"lr": 0.1}, state={"w": torch.zeros(size)})
    assert full.stat().st_size > limit  # so the child's file is cut short
    out = subprocess.run([sys.executable, "-c", _WRITE_UNDER_A_SIZE_LIMIT, str(path), str(limit),
                          str(size)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["run.pt"]  # no temporary
    assert torch.equal(load_checkpoint(path, kind="test", settings={"lr": 0.1})["w"],
                       torch.ones(2))
    # at the flush the OS error itself; inside torch.save, torch's writer's (wrapped)
    assert re.fullmatch(rf"OSError: cannot write checkpoint {re.escape(str(path))}: "
                        r"(\[Errno 27\] File too large|\[enforce fail at inline_container.*)\n",
                        out.stdout), out.stdout


class _Interrupting(torch.Tensor):
    """A tensor whose pickling is interrupted (Ctrl-C while torch.save runs)."""

    def __reduce_ex__(self, protocol):
        raise KeyboardInterrupt


def test_an_interrupted_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, kind="test", settings=SETTINGS, state={"epoch": 1})
    before = path.read_bytes()
    state = {"epoch": 2, "weights": torch.ones(64), "late": torch.zeros(3).as_subclass(
        _Interrupting)}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, kind="test", settings=SETTINGS, state=state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    assert load_checkpoint(path, kind="test", settings=SETTINGS)["epoch"] == 1


def test_only_plain_data_is_written(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(TypeError, match=r"checkpoint\['state'\]\['extra'\] is .*Path"):
        save_checkpoint(path, kind="test", settings=SETTINGS, state={"extra": tmp_path})
    with pytest.raises(TypeError, match=r"\['settings'\]\['fn'\] is <function"):
        save_checkpoint(path, kind="test", settings={"fn": lambda: 0}, state={})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, kind="test", settings=SETTINGS, state={"sha256": "x"})
    assert not path.exists()


def _checkpoint_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, kind="test", settings=SETTINGS,
                    state={"weights": torch.linspace(-1, 1, 6, dtype=torch.float64)})
    return path


def test_every_single_bit_flip_is_caught_or_harmless(tmp_path):
    """Flip one bit in every byte of the parameter and every 5th byte elsewhere in a real
    checkpoint: the load either raises a ValueError naming the file or returns exactly the saved
    content (a bit of zip bookkeeping that torch ignores); never a silently different state and
    never another exception type."""
    path = _checkpoint_file(tmp_path)
    original = path.read_bytes()
    weights = torch.linspace(-1, 1, 6, dtype=torch.float64)
    start = original.find(weights.numpy().tobytes())
    assert start > 0
    outcomes = {"refused": 0, "identical": 0}
    region = range(start, start + weights.numel() * 8)
    for offset in sorted(set(range(0, len(original), 5)) | set(region)):
        damaged = bytearray(original)
        damaged[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(damaged))
        try:
            state = load_checkpoint(path, kind="test", settings=SETTINGS)
        except ValueError as exc:
            assert str(path) in str(exc)
            outcomes["refused"] += 1
            if offset in region:
                assert "is corrupted: its content does not match its SHA-256" in str(exc)
        else:
            assert torch.equal(state["weights"], weights), offset
            outcomes["identical"] += 1
    assert outcomes["refused"] >= weights.numel() * 8  # every bit of the parameter at least


def test_a_tampered_value_with_the_old_hash_is_corrupt(tmp_path):
    path = _checkpoint_file(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["weights"][2] = torch.nextafter(raw["weights"][2], torch.tensor(2.0, dtype=torch.float64))
    torch.save(raw, path)
    with pytest.raises(ValueError, match=r"ckpt\.pt is corrupted: its content does not match"):
        load_checkpoint(path, kind="test", settings=SETTINGS)


def _hostile_files(tmp_path):
    """(name, writer) pairs: each writes one hostile or foreign file to the path given."""
    real = _checkpoint_file(tmp_path)
    good = real.read_bytes()
    rng = np.random.default_rng(0)

    def saved(obj):
        return lambda path: torch.save(obj, path)

    return {
        "empty": lambda path: path.write_bytes(b""),
        "text": lambda path: path.write_text("epoch,loss\n1,0.5\n"),
        "random bytes": lambda path: path.write_bytes(rng.bytes(4096)),
        "zip header only": lambda path: path.write_bytes(b"PK\x03\x04garbage"),
        "truncated to 10%": lambda path: path.write_bytes(good[: len(good) // 10]),
        "truncated to 90%": lambda path: path.write_bytes(good[: 9 * len(good) // 10]),
        "last byte cut": lambda path: path.write_bytes(good[:-1]),
        "a bare tensor": saved(torch.zeros(3)),
        "another program's state dict": saved(nn.Linear(2, 2).state_dict()),
        "a list": saved([1, 2, 3]),
        "old unfolding format": saved({"format": "stepsize.unfolding.checkpoint/1",
                                       "config": {}, "parameter": torch.zeros(2)}),
        "another trainer's kind": lambda path: save_checkpoint(
            path, kind="other", settings=SETTINGS, state={"weights": torch.zeros(6)}),
        "hash removed": saved({k: v for k, v in torch.load(real, weights_only=True).items()
                               if k != "sha256"}),
        "settings not a dict": saved({**torch.load(real, weights_only=True), "settings": [1]}),
        "a torch.Size inside": saved({**torch.load(real, weights_only=True),
                                      "weights": torch.Size([2])}),
    }


def test_hostile_and_foreign_files_are_clear_value_errors(tmp_path):
    reasons = {}
    for name, write in _hostile_files(tmp_path).items():
        path = tmp_path / "hostile.pt"
        write(path)
        with pytest.raises(ValueError) as info:
            load_checkpoint(path, kind="test", settings=SETTINGS)
        message = str(info.value)
        assert str(path) in message and "resume=False" in message, name
        assert "weights_only=False" not in message, name  # never advise the unsafe load
        reasons[name] = message
    assert "is not a test checkpoint (it was written by 'other')" in reasons[
        "another trainer's kind"]
    assert "format 'stepsize.unfolding.checkpoint/1'" in reasons["old unfolding format"]
    assert "is corrupted: its content does not match" in reasons["hash removed"]
    assert "is corrupted or not a stepsize checkpoint" in reasons["empty"]


@pytest.mark.parametrize("form", ["torch zip", "raw pickle"])
def test_a_planted_pickle_is_refused_without_running(tmp_path, form):
    path, marker = tmp_path / "planted.pt", tmp_path / "PWNED"
    _plant(path, marker, form)
    with pytest.raises(ValueError, match=r"planted\.pt .*posix\.system, which is not plain data; "
                                         r"refused without running it"):
        load_checkpoint(path, kind="test", settings=SETTINGS)
    assert not marker.exists()
    with open(path, "rb") as stream:  # the control: an unsafe load would have run it
        pickle.load(stream) if form == "raw pickle" else torch.load(stream, weights_only=False)
    assert marker.exists()


def test_different_settings_are_all_named(tmp_path):
    path = _checkpoint_file(tmp_path)
    changed = {**SETTINGS, "lr": 0.2, "data": "ffff0000", "seed": 1}
    del changed["teacher"]
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, kind="test", settings=changed, hints={"data": " (other data)"})
    assert str(info.value) == (
        f"checkpoint {path} was written for a different configuration: lr is 0.1 there but 0.2 "
        "here; data is '0123abcd' there but 'ffff0000' here; seed is not recorded there but 1 "
        "here; teacher is None there but not set here (other data); pass resume=False or use "
        "another file"
    )
    # a list where a tuple was saved is the same setting only if the types agree
    with pytest.raises(ValueError, match=r"betas is \(0.9, 0.999\) there but \[0.9, 0.999\]"):
        load_checkpoint(path, kind="test", settings={**SETTINGS, "betas": [0.9, 0.999]})


def test_fingerprint_separates_values_types_and_shapes():
    values = torch.arange(6, dtype=torch.float64)
    assert fingerprint(values) == fingerprint(values.clone())
    assert len(fingerprint(values)) == 16
    variants = [values.float(), values.reshape(2, 3), values.numpy(), [0, 1], (0, 1), {"a": 1},
                {"a": 1.0}, "0", 0, 0.0, False, None]
    prints = [fingerprint(v) for v in variants] + [fingerprint(values)]
    assert len(set(prints)) == len(prints)
    # one flipped bit anywhere in a float64 value changes the fingerprint
    bits = values.numpy().view(np.uint64)
    for bit in range(64):
        flipped = torch.from_numpy((bits ^ np.uint64(1 << bit) * (np.arange(6) == 4)).view(
            np.float64))
        assert fingerprint(flipped) != fingerprint(values), bit
    assert fingerprint({"a": 1, "b": 2}) != fingerprint({"b": 2, "a": 1})


def test_module_fingerprint_sees_structure_bits_and_dtype():
    def net(bits, width=8):
        torch.manual_seed(bits + width)
        layers = [nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                  nn.Linear(width, 2)]  # the middle layer takes `bits`, the others 8
        return quantize_model(nn.Sequential(*layers), bits)

    base = module_fingerprint(net(4), weights=False)
    assert module_fingerprint(net(4), weights=False) == base
    assert module_fingerprint(net(2), weights=False) != base  # same shapes, other bit width
    assert module_fingerprint(net(4, width=9), weights=False) != base
    assert module_fingerprint(net(4).double(), weights=False) != base
    assert module_fingerprint(net(4).eval(), weights=False) == base  # the mode is no setting
    a, b = net(4), net(4)
    assert module_fingerprint(a, weights=True) == module_fingerprint(b, weights=True)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-6
    assert module_fingerprint(a, weights=True) != module_fingerprint(b, weights=True)


def test_checkpoint_path_is_checked_at_the_boundary(tmp_path):
    assert check_checkpoint_path(tmp_path / "new.pt") == tmp_path / "new.pt"
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        check_checkpoint_path(b"run.pt")
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        check_checkpoint_path(3)
    with pytest.raises(ValueError, match="checkpoint must be a file path, got ''"):
        check_checkpoint_path("")
    with pytest.raises(ValueError, match="missing does not exist"):
        check_checkpoint_path(tmp_path / "missing" / "run.pt")
    with pytest.raises(ValueError, match="exists and is not a regular file"):
        check_checkpoint_path(tmp_path)


def test_docstring_examples_and_no_torch_import():
    failures, attempted = doctest.testmod(checkpoint_module, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and attempted >= 10
    code = "import sys, stepsize._checkpoint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- the same guarantees through the three trainers ----------------------------------------

def _train_model(path):
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 4)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    return train_model(net, (x, (x[:, 0] > 0).long()),
                       options=TrainingOptions(epochs=1, lr=0.05, batch_size=16), progress=False,
                       checkpoint=path, resume=True)


def _train_incremental(path):
    return train_incremental(UnfoldedGD(2, np.diag([1.0, 2.0]), init=0.3), batch_size=8,
                             steps_per_generation=2, lr=0.01, seed=0, progress=False,
                             checkpoint=path, resume=True)


def _train_expected_loss(path):
    return train_expected_loss(UnfoldedGD(2, np.diag([1.0, 2.0]), init=0.3),
                               steps_per_generation=2, lr=0.01, progress=False, checkpoint=path,
                               resume=True)


TRAINERS = {"train_model": _train_model, "train_incremental": _train_incremental,
            "train_expected_loss": _train_expected_loss}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainers_refuse_planted_hostile_and_bit_flipped_files(tmp_path, trainer):
    train = TRAINERS[trainer]
    marker = tmp_path / "PWNED"
    for form in ("torch zip", "raw pickle"):
        path = tmp_path / f"planted-{form[:3]}.pt"
        _plant(path, marker, form)
        with pytest.raises(ValueError, match="refused without running it"):
            train(path)
        assert not marker.exists()
    for name, write in _hostile_files(tmp_path).items():
        path = tmp_path / "hostile.pt"
        write(path)
        content = path.read_bytes()
        with pytest.raises(ValueError, match=r"hostile\.pt .*resume=False"):
            train(path)
        assert path.read_bytes() == content, name  # refused, not overwritten
    # a real checkpoint of this trainer with one bit flipped in its first float tensor
    path = tmp_path / "real.pt"
    first = train(path)
    saved = torch.load(path, weights_only=True)
    candidates = (saved.get("parameter"), *saved.get("parameters", ()),
                  *saved.get("model", {}).values())
    tensor = next(v for v in candidates
                  if isinstance(v, torch.Tensor) and v.is_floating_point())
    data = path.read_bytes()
    offset = data.find(tensor.numpy().tobytes())
    assert offset > 0
    path.write_bytes(data[:offset] + bytes([data[offset] ^ 4]) + data[offset + 1:])
    with pytest.raises(ValueError, match=r"real\.pt is corrupted: its content does not match"):
        train(path)
    path.write_bytes(data)
    resumed = train(path)  # the intact file still resumes, at the round it stopped
    assert (resumed.resumed_from, resumed.rounds) == (first.rounds, first.rounds) >= (1, 1)
    assert resumed.losses == first.losses


def test_arrays_are_refused_when_written_and_nan_or_tensor_settings_compare_by_value(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(TypeError, match=r"state\['arr'\] is a numpy array"):
        save_checkpoint(path, kind="k", settings={"a": 1}, state={"arr": np.arange(3.0)})
    assert not path.exists()
    settings = {"lr": float("nan"), "mask": torch.tensor([1.0, 2.0])}
    save_checkpoint(path, kind="k", settings=settings, state={"w": torch.ones(2)})
    loaded = load_checkpoint(path, kind="k", settings={"lr": float("nan"),
                                                       "mask": torch.tensor([1.0, 2.0])})
    assert torch.equal(loaded["w"], torch.ones(2))
    with pytest.raises(ValueError, match="mask is"):
        load_checkpoint(path, kind="k", settings={"lr": float("nan"),
                                                  "mask": torch.tensor([1.0, 3.0])})
