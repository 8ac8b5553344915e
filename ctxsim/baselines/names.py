"""Names used by the reference numbers: loss <-> paper method names (dataset spellings: ctxsim.names).

The paper and the reference implementation spell methods their own way ("Contextual(Hybrid)",
"MS+miner", "Proxy_Anchor"); ctxsim's losses are lower-case identifiers (docs/reference-implementation.md).
"""

from __future__ import annotations

from typing import Optional

from ctxsim.errors import ConfigError
from ctxsim.names import LOSS_ALIASES, canonical_dataset
from ctxsim.names import compact as _norm

# ctxsim loss name -> method names used for it in paper-results.csv (first = canonical display name).
LOSS_METHODS: dict[str, tuple[str, ...]] = {
    "hybrid": ("Hybrid", "Contextual(Hybrid)", "Contextual", "ContextualLoss"),
    "contrastive": ("Contrastive",),
    "triplet": ("Triplet",),
    "multisimilarity": ("MS", "MultiSimilarity"),
    "ms_miner": ("MS+miner", "MultiSimilarity+miner"),
    "proxy_anchor": ("Proxy_Anchor", "ProxyAnchor"),
    "proxy_nca": ("Proxy_NCA", "ProxyNCA"),
    "roadmap": ("Roadmap",),
    "smoothap": ("SmoothAP", "Smooth_AP"),
    "fastap": ("FastAP",),
    "ntxent": ("NTXent", "NT-Xent"),
    "normsoftmax": ("NormSoftmax", "NormalizedSoftmax"),
}


def normalize_dataset(name: str) -> Optional[str]:
    """ctxsim's name of a dataset spelling ("CUB", "Cars196", "InShop" -> cub, cars, inshop); None if unknown."""
    try:
        return canonical_dataset(name)
    except ConfigError:
        return None


_METHOD_TO_LOSS = {_norm(m): loss for loss, methods in LOSS_METHODS.items() for m in methods}
_METHOD_TO_LOSS.update(LOSS_ALIASES)  # and every ctxsim spelling of a loss


def loss_for_method(method: str) -> Optional[str]:
    """The ctxsim loss a paper method name stands for ("MS+miner" -> "ms_miner"); None for others
    (e.g. "Proxy-Anchor (ResNet-50/512)", another paper's own number, or "Hybrid(ctx_weight=0.9)")."""
    return _METHOD_TO_LOSS.get(_norm(method))


def method_names(loss: str) -> tuple[str, ...]:
    """Every method spelling that denotes ``loss`` in the baseline table (may be empty)."""
    return LOSS_METHODS.get(loss, ())


def display_method(loss: str) -> str:
    """The paper's name of a ctxsim loss ("proxy_anchor" -> "Proxy_Anchor"), or the loss itself."""
    names = LOSS_METHODS.get(loss)
    return names[0] if names else loss


def method_matches(method: str, query: str) -> bool:
    """True when a stored method name matches a user's ``--method`` (a loss name or a method spelling)."""
    q_loss = loss_for_method(query)
    if q_loss is not None:
        return loss_for_method(method) == q_loss
    return _norm(method) == _norm(query)
