"""Quantization-aware training under DDP: 2 gloo processes on CPU keep identical step sizes."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from stepsize.quantization import LSQQuantizer, TrainingOptions, quantize_model, train_model
from stepsize.quantization.training import _epoch_batches

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, port, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights (DDP also broadcasts rank 0's)
        net = quantize_model(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16),
                                           nn.ReLU(), nn.Linear(16, 3)), bits=3)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(96, 6, generator=generator)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        # the first batch of each rank differs, so per-rank activation inits would differ
        first_batch_steps = [
            float(x[_epoch_batches(96, 16, 7, 0, r, world)[0]].abs().amax()) / 127
            for r in range(world)]  # the 8-bit first layer's min/max init, max|v| / Q_P
        observed = []
        net[0].input_quantizer.register_forward_hook(
            lambda module, args, out: observed.append(float(module.step_size.detach())))
        train_model(net, (x, y), options=TrainingOptions(epochs=2, lr=0.05, batch_size=16), seed=7,
                    progress=False, checkpoint=f"{folder}/ddp.pt")
        steps = torch.stack([p.detach().reshape(()) for m in net.modules()
                             if isinstance(m, LSQQuantizer) for p in m.parameters()])
        gathered = [torch.zeros_like(steps) for _ in range(world)]
        dist.all_gather(gathered, steps)
        torch.save({"gathered": gathered, "expected_init": sum(first_batch_steps) / world,
                    "own_init": first_batch_steps[rank], "observed_init": observed[0],
                    "weights": net[2].weight.detach()}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_step_sizes_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(rank0["gathered"][0], rank0["gathered"][1])
    assert torch.equal(rank0["weights"], rank1["weights"])
    assert (tmp_path / "ddp.pt").exists()  # written by rank 0
    # the first input quantizer started at the mean of the two ranks' inits on both ranks
    for rank in (rank0, rank1):
        assert rank["observed_init"] == pytest.approx(rank["expected_init"], rel=1e-6)
    assert abs(rank0["own_init"] - rank1["own_init"]) > 1e-3 * rank0["own_init"]
    saved = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert saved["settings"]["world_size"] == 2 and saved["epoch"] == 2
