"""Gathering a batch across DDP ranks so that a batch-wise loss (the contextual loss needs every
pair) sees the global batch, with the gradient flowing back to each rank's local shard."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sizes(n: int, device: torch.device) -> list[int]:
    mine = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [int(v) for v in out]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """all_gather of tensors whose first dimension may differ by rank (padded to the largest)."""
    top = max(sizes)
    if x.shape[0] < top:
        x = torch.cat([x, x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))])
    bufs = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(bufs, x.contiguous())
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        sizes = _sizes(x.shape[0], x.device)
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates x from every rank in rank order (sizes may differ). Backward sums the incoming
    gradient over ranks and returns this rank's slice: when each rank computes the loss of the
    gathered batch, DDP's gradient averaging then yields exactly the gradient of that loss.
    Without an initialised process group (or with one rank) x is returned unchanged."""
    if not _active():
        return x
    return _GatherWithGrad.apply(x)


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Concatenates labels (no gradient) from every rank in rank order."""
    if not _active():
        return labels
    return _gather_padded(labels, _sizes(labels.shape[0], labels.device))
