"""The contextual similarity and the contextual ("hybrid") loss (reference-implementation §1), with the ablation
variants of the reference's ablations.py as real options (reference-implementation §8)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._base import SimilarityLoss, similarity_regularizer
from .pairs import margin_contrastive

# reference-implementation §8: ablation number -> name (0 is the paper's loss)
ABLATIONS: dict[int, str] = {
    0: "default",
    1: "mask_only",            # N_k mask only, eps 1e-5 (L_1)
    2: "mask_only_sigmoid",    # like 1 with a sigmoid step, temperature 0.01 (L_1,sigma)
    3: "no_qe",                # no query expansion: return W~ (L_2)
    4: "no_qe_no_neg",         # like 3 without the non-neighbour intersection (L_2,M+)
    5: "min_and",              # min instead of the product as logical AND
    6: "sigmoid",              # sigmoid steps everywhere, temperature 0.01
    7: "no_neg",               # no negative intersection: W~ = inter * N
    8: "no_intersection",      # skip the intersection: W~ = N
    9: "detach_r_norm",        # detach the |R_{k/2}| normaliser
    10: "detach_nothing",      # do not detach the |N| and |not N| normalisers
}
_ABLATION_BY_NAME = {v: k for k, v in ABLATIONS.items()}
MASK_ONLY_EPS = 1e-5  # ablations 1 and 2 ignore eps and use this (reference-implementation §8)


class GreaterThan(torch.autograd.Function):
    """1[x >= t] as a float mask; backward is straight-through with a constant slope:
    d/dx = slope·grad, d/dt = -slope·grad (reference-implementation §1.2 step 3, the reference's GreaterThan)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, slope: float = 10.0) -> torch.Tensor:
        ctx.slope = slope
        ctx.t_shape = t.shape
        return (x >= t).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gx = grad * ctx.slope if ctx.needs_input_grad[0] else None
        gt = (grad * -ctx.slope).sum_to_size(ctx.t_shape) if ctx.needs_input_grad[1] else None
        return gx, gt, None


def resolve_ablation(ablation: int | str | None) -> int:
    """Maps an ablation number or name (reference-implementation §8) to its number; ValueError if unknown."""
    if ablation is None:
        return 0
    if isinstance(ablation, str):
        key = ablation.strip().lower().replace("-", "_")
        if key.isdigit():
            ablation = int(key)
        elif key in _ABLATION_BY_NAME:
            return _ABLATION_BY_NAME[key]
        else:
            raise ValueError(f"unknown ablation {ablation!r}; choose 0-10 or one of {sorted(_ABLATION_BY_NAME)}")
    if isinstance(ablation, bool) or not isinstance(ablation, int) or ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose 0-10 or one of {sorted(_ABLATION_BY_NAME)}")
    return ablation


def _min_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out[p, m] = sum_q min(a[p, q], b[q, m]): the product-free AND of ablation 5 (reference-implementation §8)."""
    return torch.minimum(a.unsqueeze(2), b.unsqueeze(0)).sum(1)


def _nonzero(den: torch.Tensor) -> torch.Tensor:
    # only an all-neighbour row (B <= k + ties) gives a zero count; its numerator is 0 too, so this
    # yields 0 where the reference would produce 0/0 = NaN
    return torch.where(den == 0, torch.ones_like(den), den)


def _check_similarity(S: torch.Tensor, k: int, eps: float) -> None:
    if not torch.is_tensor(S) or S.dim() != 2 or S.shape[0] != S.shape[1]:
        shape = tuple(S.shape) if torch.is_tensor(S) else type(S).__name__
        raise ValueError(f"S must be a square (B, B) similarity matrix, got {shape}")
    if not S.is_floating_point():
        raise ValueError(f"S must be floating point, got {S.dtype}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 2:
        raise ValueError(f"k must be at least 2 (the k/2 neighbourhood must not be empty), got {k}")
    if k > S.shape[0]:
        raise ValueError(f"k={k} is larger than the batch size {S.shape[0]}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")


def contextual_similarity(S: torch.Tensor, k: int = 4, eps: float = 0.05, *, ablation: int | str = 0,
                          slope: float = 10.0, temperature: float = 0.01) -> torch.Tensor:
    """Contextual similarity J of a (B, B) cosine-similarity matrix (reference-implementation §1.2).

    k counts the point itself; membership uses `>=` with detached thresholds; the masks have a
    straight-through gradient of `slope`; |N| and |not N| normalisers are detached, |R| is not.
    `ablation` (0-10 or a name of ABLATIONS) selects a reference-implementation §8 variant; `temperature` is the
    sigmoid temperature of ablations 2 and 6.
    """
    if torch.is_tensor(k) and k.dim() == 0:
        k = int(k)
    _check_similarity(S, k, float(eps))
    ab = resolve_ablation(ablation)
    if ab == 0:
        return _FusedContextual.apply(S, k, float(eps), float(slope))
    return _contextual_autograd(S, k, float(eps), ab, float(slope), float(temperature))


class _FusedContextual(torch.autograd.Function):
    """The default contextual similarity (reference-implementation §1.2) with a hand-derived backward: the same
    gradient autograd gives the step-by-step form (_contextual_autograd with ablation 0), with three
    B x B matmuls in backward instead of four and fewer saved tensors."""

    @staticmethod
    def forward(ctx, S, k, eps, slope):
        B = S.shape[0]
        pre = 2.0 - 2.0 * S
        neg_d = -pre.clamp(min=0.0)
        top = neg_d.topk(k, dim=1).values
        x = neg_d + eps
        N = (x >= top[:, k - 1:k]).to(S.dtype)
        N2 = (x >= top[:, k // 2 - 1:k // 2]).to(S.dtype)
        r = N.sum(1, keepdim=True)
        m = B - r
        m_den = _nonzero(m)
        A = N @ N.T
        Q = 0.5 * (A / r + ((m - r.T) + A) / m_den)
        W_tilde = Q * N
        R = N2 * N2.T
        den = R.sum(1, keepdim=True)
        J_raw = (R @ W_tilde) / den
        ctx.save_for_backward(pre > 0, N, N2, r, m_den, Q, W_tilde, R, J_raw, den)
        ctx.slope = slope
        return 0.5 * (J_raw + J_raw.T)

    @staticmethod
    def backward(ctx, G):
        passes, N, N2, r, m_den, Q, W_tilde, R, J_raw, den = ctx.saved_tensors
        G_raw = 0.5 * (G + G.T)
        G_P = G_raw / den  # J_raw = P / den, P = R @ W_tilde
        G_den = -(G_raw * J_raw).sum(1, keepdim=True) / den
        G_R = G_P @ W_tilde.T + G_den  # den = R 1 (not detached)
        G_W = R @ G_P  # R is symmetric
        G_N2 = (G_R + G_R.T) * N2.T  # R = N2 * N2^T
        G_Q = G_W * N
        G_N = G_W * Q
        G_A = (0.5 * (1.0 / r + 1.0 / m_den)) * G_Q  # A = N N^T in both intersections
        H = G_Q / m_den  # the -r_i - r_j of the |not N| intersection (r not detached there)
        G_r = -0.5 * (H.sum(1, keepdim=True) + H.sum(0, keepdim=True).T)
        G_N = G_N + (G_A + G_A.T) @ N + G_r
        G_S = (ctx.slope * 2.0) * (G_N + G_N2) * passes  # x = 2S - 2 + eps where 2 - 2S > 0 (clamp passes no gradient at 0)
        return G_S, None, None, None


def _contextual_autograd(S: torch.Tensor, k: int, eps: float, ab: int, slope: float,
                         temperature: float) -> torch.Tensor:
    """Step-by-step contextual similarity with autograd, for every §8 variant (ablation 0 included)."""
    B = S.shape[0]

    neg_d = -(2.0 - 2.0 * S).clamp(min=0.0)  # -D, D = squared Euclidean distance (§1.2 step 1)
    top = neg_d.topk(k, dim=1).values  # self (distance ~0) is among the k nearest (§1.2 step 2)
    t_k = top[:, k - 1:k].detach()
    t_h = top[:, k // 2 - 1:k // 2].detach()

    def step(x: torch.Tensor, t: torch.Tensor, smooth: bool) -> torch.Tensor:
        if smooth:  # ablations 2 and 6
            return torch.sigmoid((x - t) / temperature)
        return GreaterThan.apply(x, t, slope)

    if ab in (1, 2):  # §8: N_k mask only, returned as J
        return step(neg_d + MASK_ONLY_EPS, t_k, ab == 2)

    x = neg_d + eps
    smooth = ab == 6
    N = step(x, t_k, smooth)  # §1.2 step 3
    r = N.sum(1, keepdim=True)
    r_den = r if ab == 10 else r.detach()

    if ab == 8:
        W_tilde = N
    else:
        if ab == 5:
            inter = _min_matmul(N, N.T) / r_den
        else:
            NN = N @ N.T
            inter = NN / r_den  # §1.2 step 4: |N(i) ∩ N(j)| / |N(i)|
        if ab in (4, 7):
            W_tilde = inter * N
        else:
            # §1.2 step 5; (1-N)(1-N)^T = B - r_i - r_j + N N^T saves a matmul (same function of N)
            m = B - r
            m_den = _nonzero(m if ab == 10 else m.detach())
            if ab == 5:
                M = 1.0 - N
                inter_not = _min_matmul(M, M.T) / m_den
            else:
                inter_not = ((m - r.T) + NN) / m_den
            both = 0.5 * (inter + inter_not)
            W_tilde = torch.minimum(both, N) if ab == 5 else both * N  # §1.2 step 6
    if ab in (3, 4):  # §8: no query expansion
        return W_tilde

    N2 = step(x, t_h, smooth)  # §1.2 step 7
    if ab == 5:
        R = torch.minimum(N2, N2.T)
        num = _min_matmul(R, W_tilde)
    else:
        R = N2 * N2.T  # §1.2 step 8
        num = R @ W_tilde
    den = R.sum(1, keepdim=True)  # NOT detached (§1.2 step 9)
    J_raw = num / (den.detach() if ab == 9 else den)
    return 0.5 * (J_raw + J_raw.T)  # §1.2 step 10


class _CenterGrad(torch.autograd.Function):
    """Identity on a (B, B) similarity matrix whose backward subtracts the mean of the incoming
    gradient over the off-diagonal entries (the diagonal, 1 by construction, is left as it is).

    The contextual similarity depends only on ranks, so its value is unchanged when every similarity
    shifts together; its straight-through gradient is not, and has a net upward component that raises
    all similarities at once (the embedding collapse measured on fashion-mnist). Centring removes that
    component, making the gradient shift-invariant like the value (``ctx_center_grad``; not in the
    reference code)."""

    @staticmethod
    def forward(ctx, S: torch.Tensor) -> torch.Tensor:
        return S.clone()

    @staticmethod
    def backward(ctx, G: torch.Tensor):
        B = G.shape[0]
        off = ~torch.eye(B, dtype=torch.bool, device=G.device)
        mean = G[off].mean() if B > 1 else G.new_zeros(())
        return torch.where(off, G - mean, G)


def center_grad(S: torch.Tensor) -> torch.Tensor:
    """``S`` unchanged, with the mean of its gradient over off-diagonal entries removed in backward."""
    return _CenterGrad.apply(S)


def contextual_term(J: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """L_ctx = [sum_{i!=j} W (1-J)^2 + (1-W) J^2] / B^2 (reference-implementation §1.3, divided by B^2)."""
    B = J.shape[0]
    E = torch.where(W > 0, (1.0 - J).square(), J.square())
    return (E.sum() - E.diagonal().sum()) / B / B


@dataclass(frozen=True)
class _Defaults:
    lam: float
    gamma: float
    eps: float
    k: int
    pos_margin: float
    neg_margin: float
    reg_sim: float


# reference-implementation §1.4: each convention keeps its own defaults
CONVENTION_DEFAULTS = {
    "256": _Defaults(lam=0.4, gamma=0.1, eps=0.05, k=4, pos_margin=0.75, neg_margin=0.6, reg_sim=0.25),
    "224": _Defaults(lam=0.5, gamma=0.1, eps=0.05, k=4, pos_margin=0.75, neg_margin=0.6, reg_sim=0.3),
}


def resolve_convention(convention) -> str:
    """'256' or '224' (ints accepted); ValueError otherwise."""
    c = str(convention).strip()
    if c not in CONVENTION_DEFAULTS:
        raise ValueError(f"unknown convention {convention!r}; choose '256' (main.py) or '224' (train.py)")
    return c


class ContextualLoss(SimilarityLoss):
    """The contextual ("hybrid") loss: contextual + margin contrastive + similarity regulariser.

    convention "256" (main.py): lam·L_ctx + gamma·L_reg + (1-lam-gamma)·L_con;
    convention "224" (train.py): lam·L_con + (1-lam)·L_ctx + gamma·L_reg  -- lam weights the
    contrastive term there (reference-implementation §1.4). Unset arguments take the convention's defaults.
    gather=True computes the loss over the batch gathered from every DDP rank (gradients flow back
    to the local shard; see ctxsim.losses.distributed.gather_with_grad).
    """

    def __init__(self, convention: str = "256", lam: float | None = None, gamma: float | None = None,
                 eps: float | None = None, k: int | None = None, pos_margin: float | None = None,
                 neg_margin: float | None = None, reg_sim: float | None = None, ablation: int | str = 0,
                 slope: float = 10.0, temperature: float = 0.01, gather: bool = False,
                 ctx_center_grad: bool = False) -> None:
        super().__init__()
        # off (the reference's loss): True centres the contextual term's gradient on S (_CenterGrad)
        self.ctx_center_grad = bool(ctx_center_grad)
        self.gather = bool(gather)
        self.convention = resolve_convention(convention)
        d = CONVENTION_DEFAULTS[self.convention]
        self.lam = float(d.lam if lam is None else lam)
        self.gamma = float(d.gamma if gamma is None else gamma)
        self.eps = float(d.eps if eps is None else eps)
        self.k = int(d.k if k is None else k)
        self.pos_margin = float(d.pos_margin if pos_margin is None else pos_margin)
        self.neg_margin = float(d.neg_margin if neg_margin is None else neg_margin)
        self.reg_sim = float(d.reg_sim if reg_sim is None else reg_sim)
        self.ablation = resolve_ablation(ablation)
        self.slope = float(slope)
        self.temperature = float(temperature)
        if self.k < 2:
            raise ValueError(f"k must be at least 2, got {self.k}")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def loss_batch(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gather:
            from .distributed import gather_labels, gather_with_grad

            embeddings, labels = gather_with_grad(embeddings), gather_labels(labels)
        if self.k > embeddings.shape[0]:
            raise ValueError(f"k={self.k} is larger than the batch size {embeddings.shape[0]}")
        return embeddings, labels

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        S_ctx = center_grad(S) if self.ctx_center_grad else S
        J = contextual_similarity(S_ctx, self.k, self.eps, ablation=self.ablation, slope=self.slope,
                                  temperature=self.temperature)
        ctx = contextual_term(J, W)
        con = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
        reg = similarity_regularizer(S, self.reg_sim)
        if self.convention == "256":
            loss = self.lam * ctx + self.gamma * reg + (1.0 - self.lam - self.gamma) * con
        else:
            loss = (self.lam * con + (1.0 - self.lam) * ctx) + self.gamma * reg
        self._record(ctx=ctx, con=con, reg=reg)
        return loss

    def weights(self) -> dict[str, float]:
        """The weight on each term under this convention."""
        if self.convention == "256":
            return {"ctx": self.lam, "con": 1.0 - self.lam - self.gamma, "reg": self.gamma}
        return {"ctx": 1.0 - self.lam, "con": self.lam, "reg": self.gamma}

    def hparams(self) -> dict:
        return {"convention": self.convention, "lam": self.lam, "gamma": self.gamma, "eps": self.eps,
                "k": self.k, "pos_margin": self.pos_margin, "neg_margin": self.neg_margin,
                "reg_sim": self.reg_sim, "ablation": self.ablation, "ablation_name": ABLATIONS[self.ablation],
                "gather": self.gather, **({"ctx_center_grad": True} if self.ctx_center_grad else {})}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())
