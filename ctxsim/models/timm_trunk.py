"""Any timm model as the trunk (``model.arch = "timm:<name>"``, e.g. ``timm:vit_small_patch16_224.dino``
or ``timm:convnext_tiny``), with timm's own weights.

The trunk returns what the head pools: a CNN's feature map [B, C, h, w] (so GeM / max / avg pooling
apply as for ResNet-50); a transformer's pre-logits feature [B, C, 1, 1] (its class token, or timm's
own pooling of the tokens for models without one), so the head's pooling is the identity, as
retrieval fine-tuning of DINO ViTs uses the class token. Transformers have LayerNorm, not BatchNorm:
``bn_mode`` changes nothing there (their recipes use ``bn_mode="none"``; ``freeze_patch_embed``
keeps the patch projection as pretrained, docs/recipes-vit.md).

Images are resized to what the model needs: a transformer with a patch embedding gets its own
input size (a ViT's position embedding is for that grid; 8 px digits would have no patch at all),
a CNN gets at least ``MIN_CNN_SIDE`` px a side (a stride-32 network's last map is then 1x1, not empty).

Pretrained weights (``backbone_weights="imagenet"``, meaning the tag's own pretraining) come from
timm's cache (the Hugging Face hub cache); a machine without them and without internet gets one line
saying how to pre-fetch them or pass a local file. A local file is a state dict of the timm model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ctxsim.errors import ConfigError, one_line

PREFIX = "timm:"
MIN_CNN_SIDE = 32


def timm_name(arch: str) -> Optional[str]:
    """``"timm:convnext_tiny"`` -> ``"convnext_tiny"``; None for the other archs."""
    return arch[len(PREFIX):] if arch.startswith(PREFIX) else None


def _require_timm():
    try:
        import timm
    except ImportError:
        from ctxsim.names import require_timm

        require_timm()
        raise
    return timm


class TimmTrunk(nn.Module):
    """A timm model without its classifier; ``feature_dim`` is its ``num_features``."""

    def __init__(self, name: str, in_channels: int = 3, pretrained: bool = False):
        super().__init__()
        timm = _require_timm()
        try:
            self.net = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_channels)
        except RuntimeError as e:
            if "Unknown model" in str(e) or "Invalid pretrained tag" in str(e):
                raise ConfigError(f"timm has no model {name!r} ({one_line(e)}); list them with "
                                  "python -c \"import timm; print(timm.list_models('*vit_small*', pretrained=True))\"") from None
            raise
        self.name = name
        self.feature_dim = int(self.net.num_features)
        self.in_channels = in_channels
        # does the trunk hand the head a map to pool, or an already pooled feature (tokens)?
        size = tuple(self.net.pretrained_cfg.get("input_size", (in_channels, 224, 224)))[1:]
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            f = self.net.forward_features(torch.zeros(1, in_channels, *size))
        self.net.train(was)
        self.pre_pooled = not (f.ndim == 4 and f.shape[1] == self.feature_dim)
        patch = getattr(self.net, "patch_embed", None)
        grid = getattr(patch, "img_size", None)
        self.input_size: Optional[tuple[int, int]] = tuple(int(v) for v in grid) if grid else None

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.input_size is not None:
            target = self.input_size if (h, w) != self.input_size else None
        else:
            target = (max(h, MIN_CNN_SIDE), max(w, MIN_CNN_SIDE)) if min(h, w) < MIN_CNN_SIDE else None
        if target is None:
            return x
        return torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.forward_features(self._fit(x))
        if not self.pre_pooled:  # a CNN's map, NCHW: pooled by the head
            return f
        return self.net.forward_head(f, pre_logits=True)[:, :, None, None]  # tokens (or NHWC): timm's pooling


def build_timm_trunk(name: str, in_channels: int, weights: str | os.PathLike | None) -> TimmTrunk:
    """The trunk, with ``weights``: None (random), "imagenet" (timm's pretrained tag, from its cache),
    or a local state dict of this timm model."""
    if weights is None:
        return TimmTrunk(name, in_channels)
    if isinstance(weights, str) and weights == "imagenet":
        try:
            return TimmTrunk(name, in_channels, pretrained=True)
        except ConfigError:
            raise
        except Exception as e:  # offline, no cache, hub errors
            raise ConfigError(
                f"timm weights of {name} are not in the cache and could not be fetched ({one_line(e)}): on a "
                f"machine with internet run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" "
                "and copy its Hugging Face cache (~/.cache/huggingface, or $HF_HOME) here, or pass "
                "--backbone-weights PATH (a state dict of this model)") from None
    trunk = TimmTrunk(name, in_channels)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable or not a torch file
        raise ConfigError(f"cannot read backbone weights {path}: {one_line(e)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    missing, unexpected = trunk.net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "fc.", "classifier."))]
    if missing or [k for k in unexpected if not k.startswith(("head.", "fc.", "classifier."))]:
        raise ConfigError(f"backbone weights {path} do not fit timm model {name}: "
                          f"{len(missing)} missing keys, {len(unexpected)} unexpected keys")
    return trunk
