"""Batch AP surrogates of the reference's smooth_rank_ap.py (quick_forward): SupAP (ROADMAP's step
rank) and SmoothAP, plus the roadmap and smoothap baselines (seed-spec §2.1, §2.2, §2.4)."""

from __future__ import annotations

import torch

from ._base import MetricLoss, check_inputs, fp32, label_matrix, normalize, similarity
from .pairs import margin_contrastive


def tau_sigmoid(x: torch.Tensor, tau: float) -> torch.Tensor:
    """1 / (1 + exp(clamp(-x / tau, -50, 50))) (seed-spec §2.4; the clamp also stops the gradient)."""
    return 1.0 / (1.0 + (-x / tau).clamp(-50.0, 50.0).exp())


def batch_ap(S: torch.Tensor, W: torch.Tensor, kind: str = "supap", tau: float = 0.01, rho: float = 100.0,
             delta: float = 0.05, offset: float = 1.44, start: float = 0.5,
             roadmap_linear: bool = False) -> torch.Tensor:
    """Per-query smoothed AP over the batch, query included as a retrieved positive (seed-spec §2.4).

    diff[i, j, k] = S[i, k] - S[i, j]. SupAP: exact Heaviside (no gradient) where j and k are both
    positives of i; elsewhere sigmoid(diff/tau) for diff <= 0, start + sigmoid(diff/tau) for
    0 < diff <= delta, rho·diff + offset beyond delta (rho·(diff - delta) + offset with
    roadmap_linear=True, ROADMAP's form). SmoothAP: sigmoid(diff/tau) everywhere.
    """
    if kind not in ("supap", "smoothap"):
        raise ValueError(f"unknown AP surrogate {kind!r}; choose 'supap' or 'smoothap'")
    B = S.shape[0]
    diff = S.unsqueeze(1) - S.unsqueeze(2)  # [i, j, k] = S[i, k] - S[i, j]
    if kind == "smoothap":
        r = tau_sigmoid(diff, tau)
    else:
        Wb = W > 0
        both_pos = Wb.unsqueeze(2) & Wb.unsqueeze(1)  # W_ij and W_ik
        lin = rho * (diff - delta) + offset if roadmap_linear else rho * diff + offset
        sig = tau_sigmoid(diff, tau)
        approx = torch.where(diff > 0, torch.where(diff > delta, lin, start + sig), sig)
        exact = (diff.detach() >= 0).to(diff.dtype)  # torch.heaviside(., 1): 1 at 0, no gradient
        r = torch.where(both_pos, exact, approx)
    off_diag = 1.0 - torch.eye(B, device=S.device, dtype=S.dtype)  # k != j
    rank_all = (r * off_diag).sum(-1) + 1.0
    pos_jk = W - torch.eye(B, device=S.device, dtype=S.dtype)  # W_jk, k != j
    rank_pos = ((r * pos_jk).sum(-1) + W) * W
    return (rank_pos / rank_all).sum(1) / W.sum(1)


class SupAPLoss(MetricLoss):
    """1 - mean SupAP over the batch (seed-spec §2.4), reference form by default."""

    def __init__(self, tau: float = 0.01, rho: float = 100.0, delta: float = 0.05, offset: float = 1.44,
                 start: float = 0.5, roadmap_linear: bool = False) -> None:
        super().__init__()
        self.ap_kwargs = dict(tau=float(tau), rho=float(rho), delta=float(delta), offset=float(offset),
                              start=float(start), roadmap_linear=bool(roadmap_linear))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        with fp32(embeddings.device):
            S = similarity(normalize(embeddings))
            loss = 1.0 - batch_ap(S, label_matrix(labels), "supap", **self.ap_kwargs).mean()
        self._record(ap=loss)
        return loss

    def hparams(self) -> dict:
        return dict(self.ap_kwargs)


class RoadmapLoss(MetricLoss):
    """lam·contrastive(.9, .6) + (1-lam)·(1 - SupAP), lam .5 (seed-spec §2.1 "Roadmap", §2.2)."""

    def __init__(self, lam: float = 0.5, pos_margin: float = 0.9, neg_margin: float = 0.6, tau: float = 0.01,
                 rho: float = 100.0, delta: float = 0.05, offset: float = 1.44, start: float = 0.5,
                 roadmap_linear: bool = False) -> None:
        super().__init__()
        self.lam = float(lam)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.ap_kwargs = dict(tau=float(tau), rho=float(rho), delta=float(delta), offset=float(offset),
                              start=float(start), roadmap_linear=bool(roadmap_linear))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        with fp32(embeddings.device):
            S = similarity(normalize(embeddings))
            W = label_matrix(labels)
            ap = 1.0 - batch_ap(S, W, "supap", **self.ap_kwargs).mean()
            con = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
            loss = self.lam * con + (1.0 - self.lam) * ap
        self._record(ap=ap, con=con)
        return loss

    def hparams(self) -> dict:
        return {"lam": self.lam, "pos_margin": self.pos_margin, "neg_margin": self.neg_margin, **self.ap_kwargs}


class SmoothAPLoss(MetricLoss):
    """1 - mean SmoothAP, tau .01 (seed-spec §2.2 "smoothap"); lam > 0 adds lam·contrastive(.9, .6)
    and weights SmoothAP by 1-lam, as the 224 code's SmoothapLoss (lam .5)."""

    def __init__(self, tau: float = 0.01, lam: float = 0.0, pos_margin: float = 0.9,
                 neg_margin: float = 0.6) -> None:
        super().__init__()
        self.tau = float(tau)
        self.lam = float(lam)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        with fp32(embeddings.device):
            S = similarity(normalize(embeddings))
            W = label_matrix(labels)
            ap = 1.0 - batch_ap(S, W, "smoothap", tau=self.tau).mean()
            if self.lam:
                con = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
                loss = self.lam * con + (1.0 - self.lam) * ap
            else:
                con, loss = None, ap
        self._record(ap=ap, **({"con": con} if con is not None else {}))
        return loss

    def hparams(self) -> dict:
        return {"tau": self.tau, "lam": self.lam, "pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
