"""Retrieval models: ResNet-50 or a tiny CNN, pooling (GeM/max/avg/avg+max), optional LayerNorm,
a Linear embedding with L2-normalised output, an optional 224 bottleneck, and BatchNorm modes
(reference-implementation §3.1, §3.2)."""

from ctxsim.models.backbones import ARCHS, OFFLINE_ENV, ResNet50Trunk, TinyTrunk
from ctxsim.models.embedding import BN_MODES, BOTTLENECKS, EMBEDDING_INITS, EmbeddingModel, build_model
from ctxsim.models.heads import POOLINGS, AvgMaxPool, GeM, LinearBottleneck

__all__ = [
    "ARCHS", "BN_MODES", "BOTTLENECKS", "EMBEDDING_INITS", "OFFLINE_ENV", "POOLINGS", "AvgMaxPool",
    "EmbeddingModel", "GeM", "LinearBottleneck", "ResNet50Trunk", "TinyTrunk", "build_model",
]
