"""Gathering a batch across DDP ranks so that a batch-wise loss (the contextual loss needs every
pair) sees the global batch, with the gradient flowing back to each rank's local shard.

The one embedding gather of ctxsim: the loss (``hybrid(gather=True)``) and the data-parallel
trainer (``ctxsim.train.distributed``) both use ``gather_with_grad``.
"""

from __future__ import annotations

from typing import Optional

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
    """all_gather of tensors whose first dimension may differ by rank (padded to the largest); this
    rank's part is the local tensor itself (no copy round trip)."""
    x = x.contiguous()
    n, top = x.shape[0], max(sizes)
    padded = torch.cat([x, x.new_zeros((top - n,) + tuple(x.shape[1:]))]) if n < top else x
    bufs = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(bufs, padded)
    rank = dist.get_rank()
    return torch.cat([x if i == rank else b[:s] for i, (b, s) in enumerate(zip(bufs, sizes))])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in rank order; backward: sum over ranks, then this rank's slice."""

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


def gather_with_grad(x: torch.Tensor, labels: Optional[torch.Tensor] = None):
    """Concatenates x from every rank in rank order (sizes may differ). Backward sums the incoming
    gradient over ranks and returns this rank's slice: when each rank computes the loss of the
    gathered batch, DDP's gradient averaging then yields exactly the gradient of that loss.
    With ``labels``, returns ``(global_x, global_labels)`` (labels gathered without gradient).
    Without an initialised process group (or with one rank) the inputs are returned unchanged."""
    if labels is None:
        return _GatherWithGrad.apply(x) if _active() else x
    return (_GatherWithGrad.apply(x) if _active() else x), gather_labels(labels.to(x.device))


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Concatenates labels (no gradient) from every rank in rank order."""
    if not _active():
        return labels
    return _gather_padded(labels, _sizes(labels.shape[0], labels.device))
