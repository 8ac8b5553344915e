"""One home for the names ctxsim accepts: datasets, architectures, losses and their aliases
(job states live with the registry: ``ctxsim.registry.states``). Torch-free and cheap to import (the CLI's ``--help`` and the dashboard
read it); every other module imports these tables instead of keeping its own copy.
"""

from __future__ import annotations

import re

from ctxsim.errors import ConfigError

# ---- datasets -------------------------------------------------------------------------------------
PAPER_DATASETS = ("cub", "cars", "sop", "inat", "inshop")
# icons: built by `ctxsim data prepare icons` from the installed icon themes (ctxsim.data.icons)
SMALL_DATASETS = ("fashion-mnist", "digits", "synthetic", "icons")
DATASETS = PAPER_DATASETS + SMALL_DATASETS
# which benchmarks each resolution family's recipes cover (docs/reference-implementation.md, recipes)
PAPER_DATASETS_BY_RESOLUTION: dict[int, tuple[str, ...]] = {224: ("cub", "cars", "sop"), 256: PAPER_DATASETS}
RESOLUTIONS = (224, 256)

# The methods (as ctxsim losses) of each paper results table, in the table's order: the 224 family's
# tuned baselines (train.py) and the 256 family's main.py --loss choices (docs/reference-implementation.md §2.2-2.3).
PAPER_TABLE_LOSSES: dict[int, tuple[str, ...]] = {
    224: ("contrastive", "triplet", "ms_miner", "proxy_anchor", "proxy_nca", "roadmap", "hybrid"),
    256: ("contrastive", "triplet", "multisimilarity", "ntxent", "fastap", "smoothap", "roadmap",
          "proxy_nca", "normsoftmax", "hybrid"),
}

# ---- models ---------------------------------------------------------------------------------------
ARCHS = ("resnet50", "tiny", "tiny_spatial")
# score precisions of the retrieval metrics (``precision=`` of ctxsim.eval.metrics, ``eval.precision``)
EVAL_PRECISIONS = ("float32", "float64")

# ---- losses ---------------------------------------------------------------------------------------
LOSSES = (
    "hybrid", "contrastive", "triplet", "multisimilarity", "ms_miner", "proxy_anchor", "proxy_nca",
    "roadmap", "smoothap", "fastap", "ntxent", "normsoftmax",
)
PROXY_LOSSES = ("proxy_anchor", "proxy_nca", "normsoftmax")

# trackers a run can be mirrored to (config key ``track``): name -> (its library, the pip extra);
# the sinks are in ctxsim.trackers
TRACKER_LIBRARIES: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"),
                                                 "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_tracker_names(names) -> None:
    """ConfigError for a tracker name ctxsim does not know (listing those it knows)."""
    for n in names or []:
        if n not in TRACKER_LIBRARIES:
            raise ConfigError(f"unknown tracker {n!r} (track: {', '.join(TRACKER_LIBRARIES)})")


def tracker_library_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(TRACKER_LIBRARIES[name][0]) is not None


def require_trackers(names) -> None:
    """ConfigError (one line, with the pip command) for a tracker whose library is not installed."""
    check_tracker_names(names)
    for n in names or []:
        if not tracker_library_available(n):
            module, extra = TRACKER_LIBRARIES[n]
            raise ConfigError(f"tracker {n} needs the {module} package: pip install \"ctxsim[{extra}]\"")


def compact(name: str) -> str:
    """A spelling reduced to its letters and digits, lower-case ("MS+miner" -> "msminer")."""
    return re.sub(r"[\s_\-+.]", "", name.strip().lower())


# The one alias table for losses: compact spelling -> canonical name. Canonical names match
# through their compact form too, so "proxy-anchor", "ProxyAnchor" and "proxy_anchor" are one loss.
LOSS_ALIASES: dict[str, str] = {
    **{compact(loss): loss for loss in LOSSES},
    "contextual": "hybrid", "contextualloss": "hybrid",
    "ms": "multisimilarity", "multisim": "multisimilarity",
    "msminer": "ms_miner", "multisimilarityminer": "ms_miner",
    "normalizedsoftmax": "normsoftmax",
    "supap": "roadmap",
}

# compact spelling -> canonical dataset name
DATASET_ALIASES: dict[str, str] = {
    **{compact(d): d for d in DATASETS},
    "cub200": "cub", "cub2002011": "cub",
    "cars196": "cars", "car196": "cars", "stanfordcars": "cars",
    "stanfordonlineproducts": "sop", "onlineproducts": "sop",
    "inaturalist": "inat", "inat2021": "inat", "inat2021mini": "inat",
    "deepfashioninshop": "inshop",
    "fmnist": "fashion-mnist",
    "icon": "icons", "iconthemes": "icons", "freedesktopicons": "icons",
}


def canonical_loss(name: str) -> str:
    """ctxsim's name of a loss spelling ("MS+miner" -> "ms_miner"), or ConfigError listing the choices."""
    key = LOSS_ALIASES.get(compact(name)) if isinstance(name, str) else None
    if key is None:
        raise ConfigError(f"unknown loss {name!r}; choose from: {', '.join(LOSSES)}")
    return key


def canonical_dataset(name: str) -> str:
    """ctxsim's name of a dataset spelling ("Cars196" -> "cars"), or ConfigError listing the choices."""
    key = DATASET_ALIASES.get(compact(name)) if isinstance(name, str) else None
    if key is None:
        raise ConfigError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return key


# ---- metric direction -----------------------------------------------------------------------------
# Whether a larger or a smaller value of a metric key is better: declared here once, read by the
# metric sink (each key's stored "best"), `ctxsim show` and the dashboard. Keys not listed follow
# metric_direction()'s rule. None: neither (a schedule such as the learning rate; "best" is meaningless).
METRIC_DIRECTION: dict[str, str | None] = {
    "train/loss": "lower",
    "epoch/loss": "lower",
    "train/lr": None,
    "train/images_per_s": "higher",
    "MAP@R": "higher",
    "RP": "higher",
    "mAP": "higher",
}


def metric_direction(key: str) -> str | None:
    """"higher" or "lower" (which value of ``key`` is better) or None for a key with no direction.

    METRIC_DIRECTION first; else the rule: rates, recall and precision (R@K, MAP@R, *per_s, *rate)
    are higher-is-better; losses and times (*loss*, *time*, *_s) lower; other ``train/`` and
    ``epoch/`` keys are terms of the loss (lower); anything else is taken as a score (higher)."""
    if key in METRIC_DIRECTION:
        return METRIC_DIRECTION[key]
    k = key.lower()
    if any(w in k for w in ("per_s", "rate", "recall", "precision", "acc", "throughput")):
        return "higher"
    if re.match(r"^(train_)?(r@\d+|map@r|rp|map)(@epoch\d+)?$", k):
        return "higher"
    if any(w in k for w in ("loss", "time", "seconds", "latency", "error")) or k.endswith("_s"):
        return "lower"
    if k.startswith(("train/", "epoch/")):
        return "lower"
    return "higher"


def lower_is_better(key: str) -> bool:
    """True when the smallest value of ``key`` is its best (metric_direction(key) == "lower")."""
    return metric_direction(key) == "lower"


_PERCENT_METRIC = re.compile(r"^(val/|train_)?(R@\d+|MAP@R|RP|mAP)(@epoch\d+)?$")


def is_percent_metric(key: str) -> bool:
    """Retrieval metrics (R@K, MAP@R, RP, mAP, and their ``val/`` forms): stored and in JSON as
    fractions (0..1), shown in human output (CLI and dashboard) as percent (93.75)."""
    return bool(_PERCENT_METRIC.match(key))


def fmt_metric(key: str, value: float | None, digits: int = 2) -> str:
    """A metric value for human output: percent for retrieval metrics, 4 significant digits else."""
    if value is None:
        return ""
    if is_percent_metric(key):
        return f"{100 * value:.{digits}f}"
    return f"{value:.4g}"


def fmt_with_unit(key: str | None, value: float | None, missing: str = "-") -> str:
    """``93.60 %`` for a retrieval metric, 4 significant digits for anything else, ``missing`` for None."""
    if value is None:
        return missing
    if key and is_percent_metric(key):
        return f"{fmt_metric(key, value)} %"
    return f"{value:.4g}"


def require_timm() -> None:
    """ConfigError (one line, with the pip command) when ``model.arch=timm:<name>`` and timm is missing."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        raise ConfigError('timm trunks (model.arch=timm:<name>) need the timm package: pip install "ctxsim[timm]"')


# the key ctxsim.runner.job.execute adds to the config of a job kind that takes a device (the
# runner's --device); here so that entries below the runner's layer can read it
RUNTIME_DEVICE = "runtime_device"
