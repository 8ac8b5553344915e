"""gather_with_grad and hybrid(gather=True) on two CPU processes (gloo): the gathered loss and the
parameter gradients after DDP-style averaging equal the single-process loss on the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ctxsim.losses import build_loss
from ctxsim.losses.distributed import gather_labels, gather_with_grad

SIZES = (5, 7)  # uneven shards


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SIZES), 6, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    w = torch.randn(6, 6, generator=g)  # a shared linear "model"
    return x, y, w


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    x, y, w = _data()
    lo = sum(SIZES[:rank])
    xs, ys = x[lo:lo + SIZES[rank]], y[lo:lo + SIZES[rank]]
    w = w.clone().requires_grad_(True)
    loss = build_loss("hybrid", gather=True)(xs @ w, ys)
    loss.backward()
    dist.all_reduce(w.grad)  # what DDP does: average over ranks
    w.grad /= world
    gathered = gather_with_grad(xs)
    labels = gather_labels(ys)
    torch.save({"loss": loss.detach(), "grad": w.grad, "x": gathered.detach(), "y": labels},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_gather_with_grad_matches_single_process(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, y, w = _data()
    w = w.clone().requires_grad_(True)
    ref = build_loss("hybrid")(x @ w, y)
    ref.backward()
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(out["x"], x) and torch.equal(out["y"], y)
        assert out["loss"].item() == pytest.approx(ref.item(), abs=1e-6)
        assert torch.allclose(out["grad"], w.grad, atol=1e-5)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    y = torch.tensor([1, 2, 3])
    assert gather_labels(y) is y
    assert build_loss("hybrid", gather=True).hparams()["gather"] is True
