"""Evaluating a model of a run: during training, of a saved checkpoint (``ctxsim eval``), and of an
imported reference model. All of them end in ``ctxsim.eval.evaluate_bundle``
(reference-implementation.md §5)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ctxsim.train.build import build_run_data, resolve_device
from ctxsim.train.config import RunConfig


def evaluate_model(model: torch.nn.Module, data, cfg: RunConfig, device: torch.device | str,
                   batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                   return_embeddings: bool = False, per_query: bool = False):
    """R@K (the config's K list, else the dataset's), MAP@R and RP of ``model`` (already on
    ``device``) on ``data``'s test split, with the config's evaluation batch size and AMP setting
    (CUDA only); mAP too with the config's ``full_map``; the metrics' memory budget and score precision
    from ``eval.memory_gb`` and ``eval.precision``. ``num_workers`` defaults to the config's.
    With ``return_embeddings``: ``(metrics, (q_emb, q_labels, g_emb, g_labels))``; with ``per_query``
    a ``PerQuery`` is appended (``ctxsim.eval.evaluate_bundle``)."""
    from ctxsim.eval import evaluate_bundle

    device = torch.device(device)
    return evaluate_bundle(model, data, device=device, batch_size=batch_size or cfg.eval_batch_size,
                           num_workers=cfg.num_workers if num_workers is None else num_workers,
                           ks=cfg.ks or None, amp=bool(cfg.amp and device.type == "cuda"),
                           return_embeddings=return_embeddings, full_map=cfg.full_map, per_query=per_query,
                           memory_gb=cfg.eval_memory_gb, precision=cfg.eval_precision)


@dataclass
class LoadedCheckpoint:
    """A saved model ready to evaluate: the model on ``device``, its config (with the dataset and
    root asked for) and that config's data."""

    model: torch.nn.Module
    config: RunConfig
    data: Any
    device: torch.device


@dataclass
class CheckpointEvaluation:
    """What ``evaluate_checkpoint`` found: metrics (fractions), the config and data it used, and the
    embeddings (q_emb, q_labels, g_emb, g_labels) when asked for."""

    metrics: dict[str, float]
    config: RunConfig
    data: Any
    embeddings: Optional[tuple] = None


def load_for_evaluation(checkpoint: os.PathLike, dataset: Optional[str] = None, root: Optional[str] = None,
                        device: str = "auto", which: Optional[str] = None) -> LoadedCheckpoint:
    """Loads a checkpoint's selected (or ``which``) weights and builds the data it is evaluated on;
    ``dataset`` and ``root`` replace the run's. Bad input raises a CtxsimError (one line)."""
    from ctxsim.train.checkpoint import load_checkpoint_model
    from ctxsim.train.recipes import normalize_dataset

    model, cfg = load_checkpoint_model(checkpoint, which=which)
    if dataset is not None:
        cfg = cfg.with_overrides(dataset=normalize_dataset(dataset))
    if root is not None:
        cfg = cfg.with_overrides(root=root)
    dev = resolve_device(device)
    data = build_run_data(cfg)
    return LoadedCheckpoint(model.to(dev), cfg, data, dev)


def evaluation_workers(cfg: RunConfig) -> int:
    """Loader processes for a one-off evaluation: the config's, at most 4 and the CPU count."""
    return min(cfg.num_workers, 4, os.cpu_count() or 1)


def evaluate_checkpoint(checkpoint: os.PathLike, dataset: Optional[str] = None, root: Optional[str] = None,
                        device: str = "auto", which: Optional[str] = None, batch_size: Optional[int] = None,
                        return_embeddings: bool = False) -> CheckpointEvaluation:
    """Metrics of a saved model on a dataset's test split (``ctxsim eval``). ``return_embeddings``
    keeps the embeddings, where a retrieval picture (``--grid``) takes its neighbours from."""
    loaded = load_for_evaluation(checkpoint, dataset, root, device, which)
    out = evaluate_model(loaded.model, loaded.data, loaded.config, loaded.device, batch_size=batch_size,
                         num_workers=evaluation_workers(loaded.config), return_embeddings=return_embeddings)
    metrics, emb = out if return_embeddings else (out, None)
    return CheckpointEvaluation(metrics, loaded.config, loaded.data, emb)
