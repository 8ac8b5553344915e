"""Data-parallel training over several processes (torchrun / DDP; docs/architecture.md §5.2).

The contextual loss (reference-implementation.md §1) needs the whole batch's B x B similarity
matrix, so each rank embeds its shard of the reference batch and then gathers every rank's
embeddings and labels (``ctxsim.losses.distributed.gather_with_grad``, the gather the loss uses
too). Conventions, chosen so that an N-process run computes what one process computes on the
concatenated batch:

* Batches: every rank draws the same reference batch (same sampler, same seed) and keeps the
  contiguous slice ``[r*B/N, (r+1)*B/N)`` of it (``shard_batch`` / ``ShardedBatchSampler``); the
  gathered batch is the reference batch in its original order. B must be a multiple of N.
* Loss: on every rank the loss is the single-process loss of the gathered global batch (the value
  reported is not scaled).
* Gradients: the backward of the gather sums the gathered gradient over ranks and returns this
  rank's slice, i.e. N * dL/dE_r; DDP then averages parameter gradients over the N ranks, which
  gives sum_r dL/dE_r * dE_r/dtheta = the single-process gradient. Parameters of the loss itself
  (proxies) see the whole batch on every rank; their gradients are averaged explicitly so that the
  copies never drift apart.
* BatchNorm with batch statistics (bn_mode="none") is converted to SyncBatchNorm on CUDA (global
  statistics); on CPU (gloo) it keeps per-shard statistics, the one place where N processes differ
  from one. The paper's recipes freeze BN statistics (bn_mode freeze / eval_stats), where shards
  are independent.
* Only rank 0 reports events, writes checkpoints and evaluates; the others get a NullSink and wait
  at barriers; the evaluation's metrics are broadcast so every rank keeps the same history.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ctxsim.errors import ConfigError, CtxsimError
from ctxsim.losses.distributed import gather_with_grad
from ctxsim.train.build import seed_everything
from ctxsim.train.ranks import env_rank, env_world_size
from ctxsim.train.trainer import Trainer, error_line, project_for_loss

__all__ = [
    "DistInfo", "DistributedRun", "ShardedBatchSampler", "any_rank", "average_gradients", "broadcast_object",
    "env_rank", "env_world_size", "gather_with_grad", "setup", "shard_batch",
]

log = logging.getLogger(__name__)

_TIMEOUT = datetime.timedelta(minutes=30)  # rank 0's evaluation runs while the others wait


@dataclass
class DistInfo:
    """The process group of a run: this rank, the world, the device, whether we created it."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Destroys the process group if ``setup`` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device) -> Optional[DistInfo]:
    """Joins the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT): nccl on CUDA, gloo on CPU. Uses an already initialised group as is. None for
    a single process."""
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        owns = False
        backend = str(dist.get_backend())
    else:
        world, rank = env_world_size(), env_rank()
        if world <= 1:
            return None
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        owns = True
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ConfigError(f"rank {rank} needs GPU {local_rank} but only {n} are visible "
                              "(CUDA_VISIBLE_DEVICES should list one GPU per process)")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if owns:
        kw: dict[str, Any] = {"backend": backend, "timeout": _TIMEOUT}
        if backend == "nccl":
            kw["device_id"] = device
        dist.init_process_group(**kw)
    return DistInfo(rank, world, local_rank, backend, device, owns)


# ---- collectives (the embedding gather is ctxsim.losses.distributed.gather_with_grad) -------------
def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (stops at the same step everywhere)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Mean over ranks of the gradients of ``params`` (those outside DDP, e.g. loss proxies)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """A picklable object from rank ``src`` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ---- batches ------------------------------------------------------------------------------------
def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The contiguous slice of a reference batch that ``rank`` trains on (composition unchanged:
    concatenating the slices in rank order gives the batch back)."""
    n = len(batch)
    if n % world_size:
        raise ConfigError(f"a batch of {n} cannot be split evenly over {world_size} processes "
                          f"(batch_size must be a multiple of the number of GPUs)")
    m = n // world_size
    return [int(i) for i in batch[rank * m:(rank + 1) * m]]


class ShardedBatchSampler:
    """Wraps a batch sampler: every rank draws the same reference batches and yields its slice of
    each (``shard_batch``). len, set_epoch, state_dict and load_state_dict are the wrapped sampler's."""

    def __init__(self, batch_sampler: Any, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.sampler:
            yield shard_batch(list(b), self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> Any:
        return self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None

    def load_state_dict(self, state: Any) -> None:
        if hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state)


# ---- the run ------------------------------------------------------------------------------------
class _Projected(nn.Module):
    """model -> loss-space output in one forward, so that DDP sees the whole trainable graph."""

    def __init__(self, model: nn.Module, bottleneck_fp32: bool = False) -> None:
        super().__init__()
        self.model = model
        self.bottleneck_fp32 = bottleneck_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project_for_loss(self.model, self.model(x), self.bottleneck_fp32)


class DistributedRun(Trainer):
    """The ``Trainer`` on one rank of a data-parallel run (conventions in the module docstring)."""

    def __init__(self, cfg, sink, run_dir, device, should_stop, info: DistInfo) -> None:
        super().__init__(cfg, sink, run_dir, device, should_stop)
        self.info = info
        local_stop = should_stop
        # every rank must stop at the same step, or the others would wait in a collective forever
        self.should_stop = lambda: any_rank(bool(local_stop and local_stop()), device)
        self.ddp: Optional[nn.Module] = None
        self._ddp_sig: Optional[tuple[bool, ...]] = None

    # -- build --------------------------------------------------------------------------------
    def build(self) -> None:
        if self.cfg.batch_size % self.info.world_size:
            raise ConfigError(f"batch_size {self.cfg.batch_size} must be a multiple of the {self.info.world_size} "
                              "processes of a multi-GPU run")
        super().build()
        if self.model.bn_mode == "none" and self.device.type == "cuda":
            # global batch statistics; the modules keep their Parameter objects (optimizers unchanged)
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self._reseed()

    def _reseed(self) -> None:
        # other ranks draw their augmentations from their own stream (rank 0 keeps the run's)
        if self.info.rank:
            seed_everything(self.cfg.seed * 1_000_003 + 7919 * self.info.rank + self.step)

    def _ensure_ddp(self) -> None:
        """(Re)wraps the model when its trainable set changes (warm-up freezes and unfreezes)."""
        sig = tuple(p.requires_grad for p in self.model.parameters())
        if self.ddp is not None and sig == self._ddp_sig:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DDP(_Projected(self.model, self.cfg.bottleneck_fp32), device_ids=ids, output_device=ids[0] if ids else None,
                       broadcast_buffers=True)
        self._ddp_sig = sig

    def restore(self, ck: dict[str, Any]) -> None:
        super().restore(ck)
        self._reseed()

    # -- training -----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> bool:
        if self.cfg.warm > 0:
            self.model.set_warmup(epoch < self.cfg.warm)  # the Trainer sets it again (idempotent)
        self._ensure_ddp()
        return super().train_epoch(epoch)

    def _train_loader(self, batches: list[list[int]], seed: int):
        w = self.info
        return super()._train_loader([shard_batch(b, w.rank, w.world_size) for b in batches], seed + 7919 * w.rank)

    def _embed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.ddp(images)
        return gather_with_grad(out.float(), labels)

    def _after_backward(self) -> None:
        average_gradients([p for p in self.loss_fn.parameters() if p.requires_grad])

    def emit(self, kind: str, **data: Any) -> None:
        if kind == "step" and data.get("images_per_s") is not None:
            data["images_per_s"] = data["images_per_s"] * self.info.world_size  # the global batch
        super().emit(kind, **data)

    # -- checkpoints and evaluation (rank 0) --------------------------------------------------
    def save(self, status: str) -> Optional[str]:
        path = super().save(status) if self.info.is_main else None
        dist.barrier()
        return path if self.info.is_main else (str(self.ck_path) if self.ck_path is not None else None)

    def run_eval(self) -> dict[str, float]:
        if self.info.is_main:
            try:
                metrics = super().run_eval()
            except BaseException as e:
                broadcast_object(("error", error_line(e)))
                raise
            broadcast_object(("ok", metrics))
            return metrics
        status, payload = broadcast_object(None)
        if status != "ok":
            raise CtxsimError(f"rank 0 failed to evaluate: {payload}")
        metrics = dict(payload)
        self.history.append({"epoch": self.epoch, "metrics": metrics})
        key = self.cfg.select_metric
        if self.best["value"] is None or metrics[key] > self.best["value"]:
            self.best = {"epoch": self.epoch, "value": metrics[key], "metrics": dict(metrics)}
        return metrics
