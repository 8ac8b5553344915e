"""EmbeddingModel: trunk -> pooling -> [LayerNorm] -> Linear embedding -> L2-normalise, plus the
optional 224 bottleneck used only in loss space (reference-implementation §3.1, §3.2, §9.2-3)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ctxsim.errors import ConfigError
from ctxsim.models.backbones import ARCHS, build_trunk, init_trunk_weights
from ctxsim.models.heads import POOLINGS, LinearBottleneck, build_pooling

BN_MODES = ("none", "eval_stats", "freeze")
BOTTLENECKS = ("identity", "linear")
EMBEDDING_INITS = ("kaiming", "default", "orthogonal")
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class EmbeddingModel(nn.Module):
    """`model(x)` is the L2-normalised embedding used for retrieval; `model.project(emb)` maps it to
    the loss space (identity, or the 224 Linear(no bias)+L2-normalise bottleneck)."""

    def __init__(self, trunk: nn.Module, *, arch: str, pooling: str = "gem", layernorm: bool = False,
                 embedding_size: int = 512, bottleneck: str = "identity", bottleneck_size: int = 2048,
                 bn_mode: str = "none", embedding_init: str = "kaiming", freeze_patch_embed: bool = False):
        super().__init__()
        if bottleneck not in BOTTLENECKS:
            raise ValueError(f"unknown bottleneck {bottleneck!r}; expected one of {', '.join(BOTTLENECKS)}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown bn_mode {bn_mode!r}; expected one of {', '.join(BN_MODES)}")
        if embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"unknown embedding_init {embedding_init!r}; expected one of {', '.join(EMBEDDING_INITS)}")
        for name, value in (("embedding_size", embedding_size), ("bottleneck_size", bottleneck_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.arch = arch
        self.feature_dim = int(trunk.feature_dim)
        self.embedding_size = int(embedding_size)
        self.output_size = int(bottleneck_size) if bottleneck == "linear" else int(embedding_size)
        self.bn_mode = bn_mode
        self.spec = dict(arch=arch, pooling=pooling, layernorm=bool(layernorm), embedding_size=int(embedding_size),
                         bottleneck=bottleneck, bottleneck_size=int(bottleneck_size), bn_mode=bn_mode,
                         in_channels=int(trunk.in_channels), embedding_init=embedding_init,
                         freeze_patch_embed=bool(freeze_patch_embed))

        self.backbone = trunk
        self.pool = build_pooling(pooling)
        # reference-implementation §3.2: 256 CUB/Cars standardise the pooled 2048-d feature, no affine parameters
        self.norm = nn.LayerNorm(self.feature_dim, elementwise_affine=False) if layernorm else nn.Identity()
        self.embedding = nn.Linear(self.feature_dim, self.embedding_size, bias=True)
        if embedding_init == "kaiming":
            # reference-implementation §3.1: 224 `_initialize_weights`: kaiming_normal (fan_out), bias 0
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        elif embedding_init == "orthogonal":
            # Hyp-ViT / HIER heads on DINO ViTs: orthogonal weight, bias 0 (docs/recipes-vit.md)
            nn.init.orthogonal_(self.embedding.weight)
            nn.init.zeros_(self.embedding.bias)
        self.bottleneck = (LinearBottleneck(self.embedding_size, int(bottleneck_size))
                           if bottleneck == "linear" else nn.Identity())
        if bn_mode == "freeze":
            # reference-implementation §3.1 `--bn-freeze 1`: affine params frozen once, at construction (as the reference)
            for m in self._bn_modules():
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
        self.apply_bn_mode()
        # parameters no phase of training updates (set_warmup leaves them frozen)
        self._fixed: set[int] = set()
        if freeze_patch_embed:
            patch = getattr(getattr(trunk, "net", None), "patch_embed", None)
            if not isinstance(patch, nn.Module):
                raise ConfigError(f"model.freeze_patch_embed needs a transformer trunk with a patch embedding; "
                                  f"{arch} has none")
            # ViT fine-tuning for retrieval (Hyp-ViT, HIER, after MoCo v3): the patch projection stays as pretrained
            for p in patch.parameters():
                p.requires_grad_(False)
                self._fixed.add(id(p))

    # ------------------------------------------------------------ forward

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (and optionally LayerNorm-ed) trunk features [B, feature_dim]."""
        return self.norm(torch.flatten(self.pool(self.backbone(x)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding [B, embedding_size], float32 (as the reference casts after autocast)."""
        return F.normalize(self.embedding(self.features(x)), dim=1).float()

    def project(self, emb: torch.Tensor) -> torch.Tensor:
        """Loss-space output: identity, or the 224 linear bottleneck (reference-implementation §3.1, §9.2)."""
        return self.bottleneck(emb).float()

    # ------------------------------------------------------------ parameters

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter exactly once: backbone (trunk), embedding, bottleneck (reference-implementation §3.1 groups)."""
        return {
            "backbone": list(self.backbone.parameters()) + list(self.pool.parameters()) + list(self.norm.parameters()),
            "embedding": list(self.embedding.parameters()),
            "bottleneck": list(self.bottleneck.parameters()),
        }

    def _bn_modules(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, _BN_TYPES)]

    def apply_bn_mode(self) -> None:
        """Puts BatchNorm layers in eval mode for bn_mode "freeze" and "eval_stats" (running statistics
        frozen); call after `.train()` each epoch as the reference does (`train()` also calls it)."""
        if self.bn_mode in ("freeze", "eval_stats"):
            for m in self._bn_modules():
                m.eval()

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if mode:
            self.apply_bn_mode()
        return self

    def set_warmup(self, frozen: bool) -> None:
        """reference-implementation §3.1 `--warm`: frozen=True freezes every parameter except the embedding (and the
        bottleneck, which the reference keeps trainable); frozen=False sets requires_grad=True on all of
        them, so, as in the reference, BN affine parameters become trainable even under bn_mode="freeze"
        (reference-implementation §9.14; BN running statistics stay frozen)."""
        keep = {id(p) for p in self.embedding.parameters()} | {id(p) for p in self.bottleneck.parameters()}
        for p in self.parameters():
            if id(p) not in keep and id(p) not in self._fixed:
                p.requires_grad_(not frozen)


def build_model(arch: str = "resnet50", pooling: str = "gem", layernorm: bool = False, embedding_size: int = 512,
                bottleneck: str = "identity", bottleneck_size: int = 2048,
                backbone_weights: str | os.PathLike | None = None, bn_mode: str = "none", in_channels: int = 3,
                embedding_init: str = "kaiming", freeze_patch_embed: bool = False) -> EmbeddingModel:
    """Builds the retrieval model of reference-implementation §3.1 (224: gem, kaiming init, optional linear bottleneck,
    bn_mode="freeze") or §3.2 (256: max+layernorm or avg, embedding_init="default", bn_mode="eval_stats").

    backbone_weights: None (random init), "imagenet" (torchvision IMAGENET1K_V1, from the torch cache or
    downloaded when online; ConfigError offline) or a path to a local trunk state dict.
    """
    from ctxsim.models.timm_trunk import build_timm_trunk, timm_name

    if arch not in ARCHS and not timm_name(arch):
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)} or timm:<name>")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if backbone_weights is not None and not isinstance(backbone_weights, (str, os.PathLike)):
        raise ConfigError(f"backbone_weights must be None, 'imagenet' or a file path, got {backbone_weights!r}")
    if timm_name(arch):
        trunk = build_timm_trunk(timm_name(arch), in_channels, backbone_weights)
        if trunk.pre_pooled and pooling == "gem":
            raise ConfigError(f"{arch} hands the head a pooled feature (its class token): use model.pooling=avg "
                              "(the identity here); GeM would clamp the feature's negative values")
    else:
        trunk = build_trunk(arch, in_channels)
        init_trunk_weights(trunk, arch, backbone_weights)
    return EmbeddingModel(trunk, arch=arch, pooling=pooling, layernorm=layernorm, embedding_size=embedding_size,
                          bottleneck=bottleneck, bottleneck_size=bottleneck_size, bn_mode=bn_mode,
                          embedding_init=embedding_init, freeze_patch_embed=freeze_patch_embed)
