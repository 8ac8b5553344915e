"""Preflight: everything knowable about a run before a job exists (docs/architecture.md §4.2).

``ctxsim run`` calls ``preflight`` before it enqueues, so a run that could never start ends with one
line and exit code 2 and leaves no job row; a worker calls it again before it trains (a job queued
with ``--no-check`` on another machine) and fails the job with the same line.

Two groups of checks:

- ``check_config``: what the config alone decides (the same on every machine): the seed's range,
  finite numbers, backbone weights vs arch, the loss's options vs its class signature;
- ``check_host``: what depends on the machine: the device, the GPU ids, the data root and layout (the
  split files and a sample of images, decoded), and the sampler's capacity vs the dataset's classes.

Every failure is a ConfigError or DataError (exit code 2) worded as one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence

from ctxsim.errors import ConfigError
from ctxsim.names import PAPER_DATASETS
from ctxsim.train.config import RunConfig

__all__ = ["SEED_MAX", "SAMPLE_IMAGES", "check_config", "check_host", "preflight"]

SEED_MAX = 2**32 - 1  # numpy's legacy seeding (and the samplers' generators) take 0 .. 2^32 - 1
SAMPLE_IMAGES = 16  # images decoded per split by the data check (a quick look, not `ctxsim data verify`)
_FREE_KW = {"loss_kw": "loss", "sampler_kw": "sampler", "data_kw": "data"}  # how --set names them


def preflight(cfg: RunConfig, device: str = "auto", gpus: Sequence[str] = (), host: bool = True) -> None:
    """Raises ConfigError / DataError (one line, exit 2) for a run that cannot start. ``host=False``
    (``ctxsim run --detach --no-check``) skips the checks that depend on this machine."""
    check_config(cfg)
    if host:
        from ctxsim.names import require_trackers

        require_trackers(cfg.track)  # a tracker's library missing: one line with the pip command
        check_host(cfg, device=device, gpus=gpus)


# ---- what the config alone decides ----------------------------------------------------------------
def check_config(cfg: RunConfig) -> None:
    """Seed range, finite numbers, weights vs arch, loss options (no data, no device needed)."""
    _check_seed(cfg.seed)
    _check_finite(cfg.to_dict(), "")
    cfg.validate()
    m = cfg.model
    if m.arch.startswith("timm:"):
        from ctxsim.names import require_timm

        require_timm()  # one line with the pip command, before any job row
    elif m.backbone_weights == "imagenet" and m.arch != "resnet50":
        raise ConfigError(f"ImageNet weights exist only for arch resnet50, not {m.arch!r} "
                          "(use --backbone-weights none, or --set model.arch=resnet50)")
    _check_loss_options(cfg)


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be an integer from 0 to {SEED_MAX}, got {seed!r}")


def _check_finite(value: Any, key: str, free: bool = False) -> None:
    """Every number of the config is finite (``--set lr=nan`` or ``loss.lam=inf`` is refused). The free
    ``loss.``/``sampler.``/``data.`` entries keep "nan" as text, which the loss would turn into a float."""
    if isinstance(value, dict):
        for k, v in value.items():
            name = _FREE_KW.get(k, k) if not key else f"{key}.{k}"
            _check_finite(v, name, free or (not key and k in _FREE_KW))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(v, key, free)
    elif isinstance(value, float) and not math.isfinite(value) or free and _non_finite_text(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")


def _non_finite_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def _check_loss_options(cfg: RunConfig) -> None:
    """The loss's ``loss.<kw>`` options against its class signature: the loss is built once, on a
    stand-in of two classes (cheap; the run builds its own after seeding)."""
    import numpy as np

    from ctxsim.train.build import build_run_loss

    stand_in = SimpleNamespace(num_classes=2, train_labels=np.array([0, 0, 1, 1]))
    build_run_loss(cfg, stand_in)  # ConfigError: "loss 'hybrid' has no option nosuch; options: ..."


# ---- what depends on this machine -----------------------------------------------------------------
def check_host(cfg: RunConfig, device: str = "auto", gpus: Sequence[str] = ()) -> None:
    """The device, GPU ids, data (root, split files, a sample of images) and the sampler's capacity."""
    from ctxsim.train.build import resolve_device

    resolve_device(device if device not in (None, "auto") else cfg.device)  # cuda without CUDA
    _check_gpus(gpus)
    _check_weights_file(cfg.model.backbone_weights)
    labels, super_labels = _check_data(cfg)
    _check_sampler(cfg, labels, super_labels)


def _check_gpus(gpus: Sequence[str]) -> None:
    ids = [str(g).strip() for g in gpus if str(g).strip()]
    if not ids:
        return
    if any(not g.isdigit() for g in ids):
        raise ConfigError(f"--gpus expects GPU ids like 0,1; got {','.join(ids)!r}")
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in ids if int(g) >= n]
    if missing:
        have = "no GPU (CUDA is not available)" if n == 0 else f"GPUs 0..{n - 1}"
        raise ConfigError(f"--gpus {','.join(ids)}: no GPU {', '.join(missing)} on this machine, which has {have}")


def _check_weights_file(weights: Optional[str]) -> None:
    if weights in (None, "imagenet", "none") or not isinstance(weights, str):
        return
    if not Path(weights).expanduser().is_file():
        raise ConfigError(f"backbone weights file {weights} does not exist")


def _check_data(cfg: RunConfig):
    """(train labels, train super-labels) after a quick check of the data: for the benchmarks, the
    root, the split files and SAMPLE_IMAGES decoded images per split; the small datasets are loaded."""
    if cfg.dataset in PAPER_DATASETS:
        from ctxsim.data.datasets import quick_check

        return quick_check(cfg.dataset, cfg.root, sample=SAMPLE_IMAGES, decode=not cfg.skip_bad_images)
    from ctxsim.train.build import build_run_data

    data = build_run_data(cfg)
    return data.train_labels, data.train_super_labels


def _check_sampler(cfg: RunConfig, labels, super_labels) -> None:
    """The sampler can fill at least one batch from the training classes (``build_run``'s own check)."""
    from ctxsim.train.build import build_run_sampler

    sampler = build_run_sampler(cfg, SimpleNamespace(train_labels=labels, train_super_labels=super_labels))
    n = len(sampler)
    if cfg.max_steps_per_epoch is not None:
        n = min(n, cfg.max_steps_per_epoch)
    if n <= 0:
        raise ConfigError(f"the {cfg.sampler} sampler yields no batch of {cfg.batch_size} from the "
                          f"{len(labels)} training images of {cfg.dataset}")

