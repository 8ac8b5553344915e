"""Pooling layers and the embedding head shared by every backbone (reference-implementation §3.1, §3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("gem", "max", "avg", "avgmax")


class GeM(nn.Module):
    """Generalised-mean pooling with a fixed exponent (224 `net/resnet.py`: p=3, eps=1e-6, not trained)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = float(p)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reference-implementation §3.1: avg_pool(clamp(x, eps)^p)^(1/p) over the whole feature map
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


class AvgMaxPool(nn.Module):
    """Sum of global average and global max pooling (224 code with `--gem 0`, from Proxy-Anchor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)


def build_pooling(name: str) -> nn.Module:
    """gem (224 default), max (256 CUB/Cars), avg (256 SOP/iNat/In-Shop) or avgmax (224 `--gem 0`)."""
    if name == "gem":
        return GeM()
    if name == "max":
        return nn.AdaptiveMaxPool2d(1)
    if name == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if name == "avgmax":
        return AvgMaxPool()
    raise ValueError(f"unknown pooling {name!r}; expected one of {', '.join(POOLINGS)}")


class LinearBottleneck(nn.Module):
    """224 projector: Linear(embedding -> bottleneck_size, bias=False) then L2-normalise (reference-implementation §3.1)."""

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        self.linear = nn.Linear(in_size, out_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=1)
