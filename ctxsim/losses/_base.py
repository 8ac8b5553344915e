"""Shared pieces of every ctxsim loss: input checks, fp32 similarity, label matrix, term logging."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def check_inputs(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates a (B, D) embedding batch and its B labels; returns them (labels flattened)."""
    if not torch.is_tensor(embeddings) or not torch.is_tensor(labels):
        raise ValueError("embeddings and labels must be torch tensors")
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (B, D), got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},) to match embeddings "
            f"{tuple(embeddings.shape)}, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if embeddings.shape[0] < 2:
        raise ValueError(f"a batch needs at least 2 embeddings, got {embeddings.shape[0]}")
    return embeddings, labels.to(embeddings.device)


def fp32(device: torch.device):
    """Context that disables autocast, so the loss is computed in fp32 (reference-implementation §1.1, §3.2)."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation in fp32 (F.normalize, as the 224 code's losses do)."""
    return F.normalize(x.float(), dim=1)


class _Gram(torch.autograd.Function):
    """S = f fᵀ with the symmetric backward dS -> (G + Gᵀ) f: one matmul instead of autograd's two."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return f @ f.T

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return (grad + grad.T) @ f


def similarity(f: torch.Tensor) -> torch.Tensor:
    """S = f fᵀ for normalised f, computed as the reference does (reference-implementation §1.1)."""
    if f.requires_grad and torch.is_grad_enabled():
        return _Gram.apply(f)
    return f @ f.T


def label_matrix(labels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """W[i, j] = 1 if labels agree, diagonal included (reference-implementation §1.1)."""
    return (labels.unsqueeze(1) == labels.unsqueeze(0)).to(dtype)


def similarity_regularizer(S: torch.Tensor, reg_sim: float) -> torch.Tensor:
    """(mean(S) - reg_sim)^2 over all B^2 entries, diagonal included (reference-implementation §1.3)."""
    return (S.mean() - reg_sim).square()


class MetricLoss(nn.Module):
    """Base of every ctxsim loss: forward(embeddings, labels) -> scalar; named terms in last_terms."""

    has_proxies = False

    def __init__(self) -> None:
        super().__init__()
        self._terms: dict[str, torch.Tensor] = {}

    def _record(self, **terms: torch.Tensor) -> None:
        # stored detached; converted to floats only when read (no device sync per step)
        self._terms = {k: v.detach() for k, v in terms.items()}

    @property
    def last_terms(self) -> dict[str, float]:
        """The named terms of the last forward, as floats."""
        return {k: float(v) for k, v in self._terms.items()}

    def proxy_parameters(self) -> list[nn.Parameter]:
        """Parameters that belong in the proxy optimizer group (empty for non-proxy losses)."""
        return []

    def hparams(self) -> dict:
        """Hyper-parameters worth logging with a run."""
        return {}


class SimilarityLoss(MetricLoss):
    """A loss of the batch's fp32 cosine-similarity matrix S and its label matrix W.

    ``forward`` does the opening every such loss shares, once: check the inputs, leave autocast,
    normalise, S = f fᵀ, W from the labels; subclasses write ``loss_of(S, W)`` (and may widen the
    batch first in ``loss_batch``: DDP gathering)."""

    def loss_batch(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the loss is taken over (default: this rank's own)."""
        return embeddings, labels

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """The loss of a batch from its similarity matrix S (B x B, fp32) and label matrix W."""
        raise NotImplementedError(f"{type(self).__name__} must define loss_of(S, W)")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = self.loss_batch(*check_inputs(embeddings, labels))
        with fp32(embeddings.device):
            return self.loss_of(similarity(normalize(embeddings)), label_matrix(labels))
