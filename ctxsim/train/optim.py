"""Optimizers, parameter groups and learning-rate schedules of the two recipe families."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ctxsim.train.config import RunConfig


@dataclass
class OptimizerSet:
    """The run's optimizers, their schedulers (None = not scheduled) and what each group holds."""

    names: list[str]
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Optional[torch.optim.lr_scheduler.LRScheduler]]
    proxy_index: Optional[int] = None  # optimizer that only holds proxies (256 --loss_lr), if any

    def zero_grad(self, accumulate_proxies: bool = False) -> None:
        """Zeroes every optimizer; with accumulate_proxies the proxy optimizer keeps its grads
        (main.py never calls loss_optimizer.zero_grad(), reference-implementation §9.5)."""
        for i, opt in enumerate(self.optimizers):
            if accumulate_proxies and i == self.proxy_index:
                continue
            opt.zero_grad(set_to_none=True)

    def schedule_step(self) -> None:
        """Steps every scheduler once (called once per epoch, as both reference codes do)."""
        for s in self.schedulers:
            if s is not None:
                s.step()

    def lrs(self) -> dict[str, float]:
        """Current lr of every named group."""
        out = {}
        for name, opt in zip(self.names, self.optimizers):
            for g in opt.param_groups:
                out[g.get("name", name)] = float(g["lr"])
        return out

    def head_lr(self) -> float:
        """The lr of the embedding group (the recipe's nominal lr times the schedule)."""
        lrs = self.lrs()
        return lrs.get("embedding", next(iter(lrs.values()), 0.0))

    def state_dict(self) -> dict:
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
        }

    def load_state_dict(self, state: dict) -> None:
        for o, sd in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(sd)
        for s, sd in zip(self.schedulers, state["schedulers"]):
            if s is not None and sd is not None:
                s.load_state_dict(sd)


def _groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    groups = model.param_groups()
    return {k: list(groups.get(k, [])) for k in ("backbone", "embedding", "bottleneck")}


def build_optimizers(cfg: RunConfig, model: nn.Module, loss_fn: nn.Module) -> OptimizerSet:
    """Optimizers per recipe family.

    224 (reference-implementation §3.1): one AdamW (wd 1e-4), groups backbone lr, embedding lr x1, bottleneck lr x2,
    proxies lr x100. 256 (§3.2): Adam (coupled L2, wd 1e-4) on the backbone at lr/2 and a second Adam
    on the head at lr; proxies in a third Adam at --loss_lr (1e-3) that is not scheduled (§2.2).
    """
    g = _groups(model)
    proxies = list(loss_fn.proxy_parameters()) if getattr(loss_fn, "has_proxies", False) else []
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    wd = cfg.weight_decay

    def group(name: str, params: list, mult: float) -> dict:
        return {"params": params, "lr": cfg.lr * mult, "name": name}

    backbone = group("backbone", g["backbone"], cfg.backbone_lr_mult)
    embedding = group("embedding", g["embedding"], cfg.embedding_lr_mult)
    bottleneck = group("bottleneck", g["bottleneck"], cfg.bottleneck_lr_mult)
    scheduled: list[tuple[str, list[dict]]] = []
    if cfg.separate_optimizers:
        scheduled.append(("backbone", [backbone]))
        scheduled.append(("head", [embedding, bottleneck]))
    else:
        scheduled.append(("main", [backbone, embedding, bottleneck]))
    if proxies and cfg.proxy_lr is None:
        scheduled[-1][1].append(group("proxies", proxies, cfg.proxy_lr_mult))

    names, opts, scheds = [], [], []
    for name, gs in scheduled:
        gs = [x for x in gs if x["params"]]
        if not gs:
            continue
        opt = cls(gs, lr=gs[0]["lr"], weight_decay=wd)
        names.append(name)
        opts.append(opt)
        scheds.append(_scheduler(cfg, opt))
    proxy_index = None
    if proxies and cfg.proxy_lr is not None:
        proxy_index = len(opts)
        names.append("proxies")
        opts.append(torch.optim.Adam([{"params": proxies, "lr": cfg.proxy_lr, "name": "proxies"}],
                                     lr=cfg.proxy_lr, weight_decay=wd))
        scheds.append(None)
    return OptimizerSet(names, opts, scheds, proxy_index)


def _scheduler(cfg: RunConfig, opt: torch.optim.Optimizer):
    # 224: StepLR per epoch (§3.1); 256: MultiStepLR([15,30,45], 0.3) on both optimizers (§3.2)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_step, gamma=cfg.lr_decay_gamma)
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.lr_decay_gamma)
    return None
