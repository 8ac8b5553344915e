"""Losses: the contextual ("hybrid") loss of Liao et al. (ICML 2023) and the baselines it is compared
with, all as nn.Modules with forward(embeddings, labels) -> scalar (reference-implementation §1, §2)."""

from __future__ import annotations

import inspect

from ctxsim.names import LOSSES, canonical_loss

from ._base import MetricLoss, label_matrix, similarity_regularizer
from .ap import RoadmapLoss, SmoothAPLoss, SupAPLoss, batch_ap
from .contextual import (
    ABLATIONS,
    CONVENTION_DEFAULTS,
    ContextualLoss,
    GreaterThan,
    contextual_similarity,
    contextual_term,
    resolve_convention,
)
from .pairs import ContrastiveLoss, FastAPLoss, MultiSimilarityLoss, NTXentLoss, TripletLoss, margin_contrastive
from .proxies import NormSoftmaxLoss, ProxyAnchorLoss, ProxyNCALoss
from .regularizer import SimilarityRegularized

__all__ = [
    "LOSSES", "ABLATIONS", "build_loss", "contextual_similarity", "contextual_term", "margin_contrastive",
    "batch_ap", "label_matrix", "similarity_regularizer", "GreaterThan", "MetricLoss", "ContextualLoss",
    "ContrastiveLoss", "TripletLoss", "MultiSimilarityLoss", "ProxyAnchorLoss", "ProxyNCALoss",
    "RoadmapLoss", "SmoothAPLoss", "SupAPLoss", "FastAPLoss", "NTXentLoss", "NormSoftmaxLoss",
    "SimilarityRegularized",
]

# canonical name (ctxsim.names.LOSSES, same order) -> (class, fixed kwargs)
_REGISTRY = {
    "hybrid": (ContextualLoss, {}),
    "contrastive": (ContrastiveLoss, {}),
    "triplet": (TripletLoss, {}),
    "multisimilarity": (MultiSimilarityLoss, {"miner": False}),
    "ms_miner": (MultiSimilarityLoss, {"miner": True}),
    "proxy_anchor": (ProxyAnchorLoss, {}),
    "proxy_nca": (ProxyNCALoss, {}),
    "roadmap": (RoadmapLoss, {}),
    "smoothap": (SmoothAPLoss, {}),
    "fastap": (FastAPLoss, {}),
    "ntxent": (NTXentLoss, {}),
    "normsoftmax": (NormSoftmaxLoss, {}),
}

# accepted by build_loss for every name; ignored by losses that do not use them
_SHARED = ("num_classes", "embedding_size", "num_train_images", "class_ids", "convention")


def build_loss(name: str, **kw) -> MetricLoss:
    """Builds a loss by name (one of LOSSES). Keyword arguments override the loss's defaults.

    Every name accepts num_classes=, embedding_size=, num_train_images=, class_ids= (proxy losses)
    and convention="256"|"224" (hybrid weighting; proxy_nca softmax_scale 10 / 9; default reg_sim).
    reg_gamma=g, reg_sim=s add g·(mean(S) - s)^2 to a baseline (reg_form="convex" for the
    main_reg_sim.py form); for hybrid they are the loss's own gamma / reg_sim.
    """
    key = canonical_loss(name)  # aliases: ctxsim.names.LOSS_ALIASES
    cls, fixed = _REGISTRY[key]
    shared = {k: kw.pop(k) for k in _SHARED if k in kw}
    convention = resolve_convention(shared.get("convention") or "256")
    reg_gamma = kw.pop("reg_gamma", None)
    reg_form = kw.pop("reg_form", "add")

    if key == "hybrid":
        if reg_gamma is not None:
            if "gamma" in kw and float(kw["gamma"]) != float(reg_gamma):
                raise ValueError("hybrid: give gamma= or reg_gamma=, not two different values")
            kw.setdefault("gamma", reg_gamma)
        kw["convention"] = convention
        reg_sim = None
    else:
        reg_sim = kw.pop("reg_sim", None)
        if reg_sim is not None and reg_gamma is None:
            raise ValueError(f"{key}: reg_sim= needs reg_gamma= (the regulariser's weight)")

    params = inspect.signature(cls.__init__).parameters
    if key == "proxy_nca" and "softmax_scale" not in kw:
        kw["softmax_scale"] = 9.0 if convention == "224" else 10.0
    for k in ("num_classes", "embedding_size", "num_train_images", "class_ids"):
        if k in shared and k in params:
            kw[k] = shared[k]
    allowed = sorted(set(params) - {"self"} - set(fixed))
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"loss {key!r} has no option {', '.join(unknown)}; options: {', '.join(allowed)}")
    loss = cls(**fixed, **kw)
    if key != "hybrid" and reg_gamma is not None and float(reg_gamma) != 0.0:
        default_sim = CONVENTION_DEFAULTS[convention].reg_sim
        loss = SimilarityRegularized(loss, float(reg_gamma), default_sim if reg_sim is None else float(reg_sim),
                                     form=reg_form)
    loss.loss_name = key
    if not hasattr(loss, "convention"):
        loss.convention = convention
    return loss
