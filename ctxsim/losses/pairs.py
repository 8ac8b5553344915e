"""Pair/triplet baselines: margin contrastive (own code), and the pytorch-metric-learning (PML)
baselines the reference takes from that library with the reference's arguments (reference-implementation §2.1, §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._base import MetricLoss, SimilarityLoss, check_inputs, fp32, normalize


def margin_contrastive(S: torch.Tensor, W: torch.Tensor, pos_margin: float = 0.9,
                       neg_margin: float = 0.6) -> torch.Tensor:
    """Mean hinge over active positive pairs plus mean over active negative pairs (reference-implementation §1.3).

    With no active pair a term is an exact zero that stays connected to the graph (reference-implementation §9.8).
    """
    L_pos = F.relu(pos_margin - S) * W
    L_neg = F.relu(S - neg_margin) * (1.0 - W)
    # sum / max(count, 1): identical to the reference's "0 if none active" branch, without a sync
    l_p = L_pos.sum() / (L_pos > 0).sum().clamp(min=1)
    l_n = L_neg.sum() / (L_neg > 0).sum().clamp(min=1)
    return l_p + l_n


class ContrastiveLoss(SimilarityLoss):
    """Margin contrastive baseline, margins 0.9 / 0.6 (reference-implementation §2.1 "Contrastive", §2.2)."""

    def __init__(self, pos_margin: float = 0.9, neg_margin: float = 0.6) -> None:
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def loss_of(self, S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        loss = margin_contrastive(S, W, self.pos_margin, self.neg_margin)
        self._record(con=loss)
        return loss

    def hparams(self) -> dict:
        return {"pos_margin": self.pos_margin, "neg_margin": self.neg_margin}


class _PMLLoss(MetricLoss):
    """A PML loss (optionally after a PML miner) applied to fp32 L2-normalised embeddings."""

    term = "loss"

    def __init__(self, loss_func, miner=None) -> None:
        super().__init__()
        self.loss_func = loss_func
        self.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        with fp32(embeddings.device):
            f = normalize(embeddings)
            if self.miner is not None:
                loss = self.loss_func(f, labels, self.miner(f, labels))
            else:
                loss = self.loss_func(f, labels)
        self._record(**{self.term: loss})
        return loss


class TripletLoss(_PMLLoss):
    """PML DistanceWeightedMiner(cutoff .5, nonzero_loss_cutoff 1.4) + TripletMarginLoss(.05)
    (reference-implementation §2.1 "Triplet", §2.2 "triplet")."""

    term = "triplet"

    def __init__(self, margin: float = 0.05, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4) -> None:
        from pytorch_metric_learning import losses, miners

        super().__init__(losses.TripletMarginLoss(margin=margin),
                         miners.DistanceWeightedMiner(cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff))

    def hparams(self) -> dict:
        return {"margin": self.loss_func.margin, "cutoff": self.miner.cutoff,
                "nonzero_loss_cutoff": self.miner.nonzero_loss_cutoff}


class MultiSimilarityLoss(_PMLLoss):
    """PML MultiSimilarityLoss(alpha 2, beta 50, base .5); with miner=True preceded by PML
    MultiSimilarityMiner(epsilon .1) (reference-implementation §2.1 "MS" / "MS+miner", §2.2)."""

    term = "ms"

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, miner: bool = False,
                 epsilon: float = 0.1) -> None:
        from pytorch_metric_learning import losses, miners

        super().__init__(losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base),
                         miners.MultiSimilarityMiner(epsilon=epsilon) if miner else None)

    def hparams(self) -> dict:
        h = {"alpha": self.loss_func.alpha, "beta": self.loss_func.beta, "base": self.loss_func.base,
             "miner": self.miner is not None}
        if self.miner is not None:
            h["epsilon"] = self.miner.epsilon
        return h


class FastAPLoss(_PMLLoss):
    """PML FastAPLoss with its defaults (num_bins 10) (reference-implementation §2.2 "fastap")."""

    term = "fastap"

    def __init__(self, num_bins: int = 10) -> None:
        from pytorch_metric_learning import losses

        super().__init__(losses.FastAPLoss(num_bins=num_bins))

    def hparams(self) -> dict:
        return {"num_bins": self.loss_func.num_bins}


class NTXentLoss(_PMLLoss):
    """PML NTXentLoss with its defaults (temperature .07) (reference-implementation §2.2 "ntxent")."""

    term = "ntxent"

    def __init__(self, temperature: float = 0.07) -> None:
        from pytorch_metric_learning import losses

        super().__init__(losses.NTXentLoss(temperature=temperature))

    def hparams(self) -> dict:
        return {"temperature": self.loss_func.temperature}
