"""Names used by the reference numbers: dataset spellings and loss <-> paper method names.

The paper and the reference implementation spell methods their own way ("Contextual(Hybrid)",
"MS+miner", "Proxy_Anchor"); ctxsim's losses are lower-case identifiers (seed-spec §2, §6).
"""

from __future__ import annotations

import re
from typing import Optional

from ctxsim import DATASETS

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

# spelling (normalised) -> ctxsim dataset name
_DATASET_ALIASES = {
    "cub": "cub", "cub200": "cub", "cub2002011": "cub", "cub200_2011": "cub",
    "cars": "cars", "cars196": "cars", "stanfordcars": "cars",
    "sop": "sop", "stanfordonlineproducts": "sop", "onlineproducts": "sop",
    "inat": "inat", "inaturalist": "inat", "inat2021": "inat", "inat2021mini": "inat",
    "inshop": "inshop", "deepfashioninshop": "inshop",
    "fashionmnist": "fashion-mnist", "digits": "digits", "synthetic": "synthetic",
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-+.]", "", name.strip().lower())


def normalize_dataset(name: str) -> Optional[str]:
    """ctxsim's name of a dataset spelling ("CUB", "Cars196", "InShop" -> cub, cars, inshop); None if unknown."""
    d = _DATASET_ALIASES.get(_norm(name))
    return d if d in DATASETS else None


_METHOD_TO_LOSS = {_norm(m): loss for loss, methods in LOSS_METHODS.items() for m in methods}
_METHOD_TO_LOSS.update({_norm(loss): loss for loss in LOSS_METHODS})


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
