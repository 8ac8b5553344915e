"""Building a run from a RunConfig: its data, model, loss, batch sampler and optimizers, and the
process settings around them (device, seeds, deterministic algorithms).

Everything here is a pure function of the config; the loop (``ctxsim.train.trainer``) owns the state.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ctxsim.errors import ConfigError, one_line
from ctxsim.names import PAPER_DATASETS
from ctxsim.train.config import RunConfig
from ctxsim.train.optim import OptimizerSet, build_optimizers


# ---- process settings ---------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is a ConfigError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available (use --device cpu or auto)")
    return dev


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, as under Slurm or taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def loader_workers(requested: int) -> int:
    """DataLoader worker processes: the recipe's count, but never more than the cores available
    (8 workers on a 2-core machine only contend, and torch warns about it)."""
    return max(0, min(int(requested), available_cores()))


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device):
    """Deterministic algorithms (tests, resume checks) for the duration of a run; restores after."""
    prev_alg = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


# ---- the parts of a run -------------------------------------------------------------------------
def build_run_data(cfg: RunConfig, **extra: Any):
    """The DataBundle of a config (its dataset, root, resolution, transforms options), with its
    validation classes carved out of the training classes when ``val_classes`` is set."""
    from ctxsim.data import build_data

    kw = dict(cfg.data_kw)
    kw.update(extra)
    if cfg.xform_scale is not None:
        kw.setdefault("xform_scale", cfg.xform_scale)
    if cfg.skip_bad_images:
        kw.setdefault("skip_bad_images", True)
    if cfg.dataset in PAPER_DATASETS:  # image pipelines: the profile's decoding and crop (docs/profiles.md)
        kw.setdefault("draft", cfg.jpeg_draft)
        if cfg.rrc_ratio is not None:
            kw.setdefault("rrc_ratio", list(cfg.rrc_ratio))
    data = build_data(cfg.dataset, root=cfg.root, resolution=cfg.resolution, **kw)
    if cfg.val_classes:  # class-disjoint validation classes out of the training classes
        from ctxsim.data.val_split import split_validation

        data = split_validation(data, cfg.val_classes)
    return data


def build_run_model(cfg: RunConfig, in_channels: int):
    """The model a config describes, with its backbone weights (reference-implementation.md §3.1,
    §3.2 networks)."""
    from ctxsim.models import build_model

    m = cfg.model
    return build_model(arch=m.arch, pooling=m.pooling, layernorm=m.layernorm, embedding_size=m.embedding_size,
                       bottleneck=m.bottleneck, bottleneck_size=m.bottleneck_size,
                       backbone_weights=m.backbone_weights, bn_mode=m.bn_mode, in_channels=in_channels,
                       embedding_init=m.embedding_init, freeze_patch_embed=m.freeze_patch_embed)


def build_run_loss(cfg: RunConfig, data):
    """The loss a config describes; proxy losses get the number of training classes (or, with the
    reference's bug flag, one proxy per training image: reference-implementation.md §2.1)."""
    from ctxsim.losses import build_loss

    kw: dict[str, Any] = dict(cfg.loss_kw)
    kw.update(num_classes=int(data.num_classes), embedding_size=cfg.model.loss_dim(), convention=cfg.convention)
    if cfg.proxies_per_image:
        if cfg.loss not in ("proxy_anchor", "proxy_nca"):
            raise ConfigError("proxies_per_image applies to proxy_anchor and proxy_nca only")
        kw.update(proxies_per_image=True, num_train_images=int(len(data.train_labels)))
    try:
        return build_loss(cfg.loss, **kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(one_line(e)) from None


def build_run_sampler(cfg: RunConfig, data):
    """The batch sampler of a config (reference-implementation.md §3.1 / §3.2 / §3.3 samplers)."""
    from ctxsim.data import build_batch_sampler

    try:
        return build_batch_sampler(cfg.sampler, data.train_labels, cfg.batch_size,
                                   samples_per_class=cfg.samples_per_class, super_labels=data.train_super_labels,
                                   seed=cfg.seed, **cfg.sampler_kw)
    except TypeError as e:
        raise ConfigError(f"sampler {cfg.sampler}: {one_line(e)}") from None


@dataclass
class RunParts:
    """What a config builds: data, model and loss (on the device), sampler, optimizers, and the
    number of steps an epoch takes."""

    data: Any
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    sampler: Any
    opt: OptimizerSet
    steps_per_epoch: int


def build_run(cfg: RunConfig, device: torch.device) -> RunParts:
    """Seeds the process with the config's seed, then builds its parts in a fixed order (data, model,
    loss, sampler, optimizers: the random draws of a run depend on it)."""
    seed_everything(cfg.seed)
    data = build_run_data(cfg)
    model = build_run_model(cfg, data.in_channels).to(device)
    loss_fn = build_run_loss(cfg, data).to(device)
    sampler = build_run_sampler(cfg, data)
    opt = build_optimizers(cfg, model, loss_fn)
    n = len(sampler)
    if cfg.max_steps_per_epoch is not None:
        n = min(n, cfg.max_steps_per_epoch)
    if n <= 0:
        raise ConfigError(f"the {cfg.sampler} sampler yields no batch of {cfg.batch_size} from this training set")
    return RunParts(data, model, loss_fn, sampler, opt, n)
