"""Batch AP surrogates of the reference's smooth_rank_ap.py (quick_forward): SupAP (ROADMAP's step
rank) and SmoothAP, plus the roadmap and smoothap baselines (reference-implementation §2.1, §2.2, §2.4)."""

from __future__ import annotations

import torch

from ._base import SimilarityLoss
from .pairs import margin_contrastive


def tau_sigmoid(x: torch.Tensor, tau: float) -> torch.Tensor:
    """1 / (1 + exp(clamp(-x / tau, -50, 50))) (reference-implementation §2.4; the clamp also stops the gradient)."""
    return 1.0 / (1.0 + (-x / tau).clamp(-50.0, 50.0).exp())


class _RankStep(torch.autograd.Function):
    """Element-wise rank surrogate r(diff) of reference-implementation §2.4 with a hand-written backward, so that
    only diff and the positive mask are kept for backward (autograd would keep ~6 B^3 tensors).
    The gradient is the one autograd gives the reference's expressions: 0 on exact Heaviside
    entries, rho on the linear branch, exp(e)/(1+exp(e))^2/tau on sigmoid entries (e = -diff/tau
    clamped to +-50; 0 where the clamp is active)."""

    @staticmethod
    def forward(ctx, diff, both_pos, tau, rho, delta, offset, start, roadmap_linear):
        e = (-diff / tau).clamp(-50.0, 50.0)
        sig = 1.0 / (1.0 + e.exp())
        if both_pos is None:  # SmoothAP
            r = sig
        else:  # SupAP
            lin = rho * (diff - delta) + offset if roadmap_linear else rho * diff + offset
            r = torch.where(diff > 0, torch.where(diff > delta, lin, start + sig), sig)
            r = torch.where(both_pos, (diff >= 0).to(diff.dtype), r)  # heaviside(., 1)
        ctx.save_for_backward(diff, both_pos)
        ctx.params = (tau, rho, delta)
        return r

    @staticmethod
    def backward(ctx, grad):
        diff, both_pos = ctx.saved_tensors
        tau, rho, delta = ctx.params
        e_raw = -diff / tau
        e = e_raw.clamp(-50.0, 50.0)
        ex = e.exp()
        d = ex / (1.0 + ex).square() / tau
        d = torch.where((e_raw >= -50.0) & (e_raw <= 50.0), d, torch.zeros_like(d))
        if both_pos is not None:
            d = torch.where(diff > delta, torch.full_like(d, rho), d)
            d = torch.where(both_pos, torch.zeros_like(d), d)
        return grad * d, None, None, None, None, None, None, None


def batch_ap(S: torch.Tensor, W: torch.Tensor, kind: str = "supap", tau: float = 0.01, rho: float = 100.0,
             delta: float = 0.05, offset: float = 1.44, start: float = 0.5,
             roadmap_linear: bool = False) -> torch.Tensor:
    """Per-query smoothed AP over the batch, query included as a retrieved positive (reference-implementation §2.4).

    diff[i, j, k] = S[i, k] - S[i, j]. SupAP: exact Heaviside (no gradient) where j and k are both
    positives of i; elsewhere sigmoid(diff/tau) for diff <= 0, start + sigmoid(diff/tau) for
    0 < diff <= delta, rho·diff + offset beyond delta (rho·(diff - delta) + offset with
    roadmap_linear=True, ROADMAP's form). SmoothAP: sigmoid(diff/tau) everywhere.
    rank_all(i,j) = 1 + sum_{k!=j} r; rank_pos(i,j) = 1 + sum_{k!=j, W_jk} r; AP_i = mean over
    positives j of rank_pos / rank_all.
    """
    if kind not in ("supap", "smoothap"):
        raise ValueError(f"unknown AP surrogate {kind!r}; choose 'supap' or 'smoothap'")
    diff = S.unsqueeze(1) - S.unsqueeze(2)  # [i, j, k] = S[i, k] - S[i, j]
    both_pos = None
    if kind == "supap":
        Wb = W > 0
        both_pos = Wb.unsqueeze(2) & Wb.unsqueeze(1)  # W_ij and W_ik
    r = _RankStep.apply(diff, both_pos, float(tau), float(rho), float(delta), float(offset), float(start),
                        bool(roadmap_linear))
    r_jj = r.diagonal(dim1=1, dim2=2)  # the k = j terms, excluded from both ranks
    rank_all = r.sum(-1) - r_jj + 1.0
    rank_pos = (torch.einsum("ijk,jk->ij", r, W) - r_jj * W.diagonal().unsqueeze(0) + W) * W
    return (rank_pos / rank_all).sum(1) / W.sum(1)


class SupAPLoss(SimilarityLoss):
    """1 - mean SupAP over the batch (reference-implementation §2.4), reference form by default."""

    def __init__(self, tau: float = 0.01, rho: float = 100.0, delta: float = 0.05, offset: float = 1.44,
                 start: float = 0.5, roadmap_linear: bool = False) -> None:
        super().__init__()
        self.ap_kwargs = dict(tau=float(tau), rho=float(rho), delta=float(delta), offset=float(offset),
                              start=float(start), roadmap_linear=bool(roadmap_linear))

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        loss = 1.0 - batch_ap(S, W, "supap", **self.ap_kwargs).mean()
        self._record(ap=loss)
        return loss

    def hparams(self) -> dict:
        return dict(self.ap_kwargs)


class RoadmapLoss(SimilarityLoss):
    """lam·contrastive(.9, .6) + (1-lam)·(1 - SupAP), lam .5 (reference-implementation §2.1 "Roadmap", §2.2)."""

    def __init__(self, lam: float = 0.5, pos_margin: float = 0.9, neg_margin: float = 0.6, tau: float = 0.01,
                 rho: float = 100.0, delta: float = 0.05, offset: float = 1.44, start: float = 0.5,
                 roadmap_linear: bool = False) -> None:
        super().__init__()
        self.lam = float(lam)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.ap_kwargs = dict(tau=float(tau), rho=float(rho), delta=float(delta), offset=float(offset),
                              start=float(start), roadmap_linear=bool(roadmap_linear))

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        ap = 1.0 - batch_ap(S, W, "supap", **self.ap_kwargs).mean()
        con = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
        self._record(ap=ap, con=con)
        return self.lam * con + (1.0 - self.lam) * ap

    def hparams(self) -> dict:
        return {"lam": self.lam, "pos_margin": self.pos_margin, "neg_margin": self.neg_margin, **self.ap_kwargs}


class SmoothAPLoss(SimilarityLoss):
    """1 - mean SmoothAP, tau .01 (reference-implementation §2.2 "smoothap"); lam > 0 adds lam·contrastive(.9, .6)
    and weights SmoothAP by 1-lam, as the 224 code's SmoothapLoss (lam .5)."""

    def __init__(self, tau: float = 0.01, lam: float = 0.0, pos_margin: float = 0.9,
                 neg_margin: float = 0.6) -> None:
        super().__init__()
        self.tau = float(tau)
        self.lam = float(lam)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        ap = 1.0 - batch_ap(S, W, "smoothap", tau=self.tau).mean()
        if not self.lam:
            self._record(ap=ap)
            return ap
        con = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
        self._record(ap=ap, con=con)
        return self.lam * con + (1.0 - self.lam) * ap

    def hparams(self) -> dict:
        return {"tau": self.tau, "lam": self.lam, "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
