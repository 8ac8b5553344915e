"""Backbones: torchvision ResNet-50 (reference-implementation §3.1, §3.2) and a tiny CNN for small images.

Both map an image batch [B, C, H, W] to a feature map [B, feature_dim, h, w]; pooling happens in
the head (ctxsim.models.embedding).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch
from torch import nn

from ctxsim.errors import ConfigError, one_line
from ctxsim.names import ARCHS

log = logging.getLogger(__name__)

# Set CTXSIM_OFFLINE=1 to never try to download ImageNet weights.
OFFLINE_ENV = "CTXSIM_OFFLINE"


class ResNet50Trunk(nn.Module):
    """torchvision ResNet-50 up to layer4 (no avgpool/fc); state-dict keys match torchvision's."""

    feature_dim = 2048

    def __init__(self, in_channels: int = 3):
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Keep torchvision's attribute names so torchvision/ImageNet state dicts load unchanged.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TinyTrunk(nn.Module):
    """Three conv-BN-ReLU stages (32, 64, 128 channels) with two 2x2 max-pools; fast on CPU.

    Works for inputs from 4x4 up (digits 8x8, fashion-mnist 28x28, synthetic images).
    """

    def __init__(self, in_channels: int = 1, widths: tuple = (32, 64, 128)):
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        w1, w2, w3 = (int(w) for w in widths)
        self.stage1 = stage(in_channels, w1)
        self.pool1 = nn.MaxPool2d(2, ceil_mode=True)
        self.stage2 = stage(w1, w2)
        self.pool2 = nn.MaxPool2d(2, ceil_mode=True)
        self.stage3 = stage(w2, w3)
        self.feature_dim = w3
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.pool2(self.stage2(self.pool1(self.stage1(x)))))


class TinySpatialTrunk(nn.Module):
    """Small-image trunk that keeps where things are: the tiny conv stages (32, 64, 64 channels, two
    2x2 max-pools), their map average-pooled to ``grid`` x ``grid`` and flattened, concatenated with a
    pixel path (the input average-pooled to ``pixel_grid`` x ``pixel_grid``, flattened).

    Output [B, feature_dim, 1, 1], so the head's global pooling is the identity. The pixel path makes
    the untrained embedding a random projection of (normalised) pixels plus random conv features, so
    training starts near raw-pixel retrieval instead of far below it.
    """

    def __init__(self, in_channels: int = 1, grid: int = 4, pixel_grid: int = 14, width: int = 32):
        super().__init__()
        self.trunk = TinyTrunk(in_channels, widths=(width, 2 * width, 2 * width))
        self.grid, self.pixel_grid = int(grid), int(pixel_grid)
        self.feature_dim = 2 * width * self.grid ** 2 + in_channels * self.pixel_grid ** 2
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = nn.functional.adaptive_avg_pool2d(self.trunk(x), self.grid).flatten(1)
        pix = nn.functional.adaptive_avg_pool2d(x, self.pixel_grid).flatten(1)
        return torch.cat([conv, pix], dim=1)[:, :, None, None]


def build_trunk(arch: str, in_channels: int) -> nn.Module:
    """A randomly initialised trunk for `arch` ("resnet50" or "tiny")."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if arch == "resnet50":
        return ResNet50Trunk(in_channels)
    if arch == "tiny":
        return TinyTrunk(in_channels)
    if arch == "tiny_spatial":
        return TinySpatialTrunk(in_channels)
    raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")


# ---------------------------------------------------------------- weights


def _clean_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Accepts a plain state dict, or one wrapped in {"state_dict": ...}/{"model": ...}; strips
    "module."/"backbone." prefixes and drops torchvision's classifier ("fc.*")."""
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "backbone"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"backbone weights {source} do not hold a state dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("fc."):
            continue
        out[key] = value
    return out


def _adapt_conv1(state: dict[str, torch.Tensor], trunk: nn.Module) -> None:
    """RGB conv1 weights for a trunk with C != 3 input channels: the channel mean repeated C times,
    which equals the RGB network applied to the image replicated over three channels."""
    w = state.get("conv1.weight")
    if w is None or not isinstance(trunk, ResNet50Trunk):
        return
    c = trunk.in_channels
    if w.shape[1] == 3 and c != 3:
        state["conv1.weight"] = (w.sum(dim=1, keepdim=True) / c).repeat(1, c, 1, 1)


def load_trunk_weights(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly loads `state` into `trunk`; any mismatch raises ConfigError naming the file."""
    _adapt_conv1(state, trunk)
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"shape mismatch at {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise ConfigError(f"backbone weights {source} do not fit this {type(trunk).__name__}: " + "; ".join(parts))
    trunk.load_state_dict(state, strict=True)


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ResNet50_Weights.IMAGENET1K_V1 from the torch hub cache, downloading only when online."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.is_file():
        offline = os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")
        if not offline:
            try:
                socket.create_connection(("download.pytorch.org", 443), timeout=3).close()
            except OSError:
                offline = True
        if offline:
            raise ConfigError(
                f"ImageNet ResNet-50 weights are not in the torch cache ({cached}) and this machine is offline: "
                "connect to the internet once so torchvision can cache them, or pass --backbone-weights PATH "
                "(a local resnet50 state dict .pth)"
            )
        log.info("downloading ImageNet ResNet-50 weights to %s", cached)
        try:
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                      check_hash=True, weights_only=True)
        except Exception as exc:  # network errors, hash mismatch
            raise ConfigError(f"could not download ImageNet ResNet-50 weights ({exc}); pass --backbone-weights PATH "
                              "(a local resnet50 state dict .pth)") from exc
    return _read_weights_file(cached)


def _read_weights_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"backbone weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-torch files
        raise ConfigError(f"cannot read backbone weights {path}: {one_line(exc)}") from exc


def init_trunk_weights(trunk: nn.Module, arch: str, weights: str | os.PathLike | None) -> None:
    """None: keep the random init; "imagenet": torchvision IMAGENET1K_V1 (resnet50 only); a path: a
    local state dict (torch.load weights_only=True)."""
    if weights is None:
        return
    if isinstance(weights, str) and weights == "imagenet":
        if arch != "resnet50":
            raise ConfigError(f"ImageNet weights exist only for arch resnet50, not {arch!r}")
        load_trunk_weights(trunk, _clean_state_dict(_imagenet_state_dict(), "imagenet"), "imagenet")
        return
    path = Path(weights).expanduser()
    load_trunk_weights(trunk, _clean_state_dict(_read_weights_file(path), str(path)), str(path))
