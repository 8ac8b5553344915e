"""The similarity regulariser added to a baseline (reference-implementation §1.3, §1.4; §2.2 main_reg_sim.py)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import MetricLoss, check_inputs, fp32, normalize, similarity, similarity_regularizer


class SimilarityRegularized(MetricLoss):
    """base + gamma·(mean(S) - reg_sim)^2 (form "add": 224 train.py, for every loss), or
    (1-gamma)·base + gamma·reg (form "convex": 256 main_reg_sim.py). S is computed from
    re-normalised embeddings, as 224's get_reg_loss does."""

    def __init__(self, base: MetricLoss, gamma: float, reg_sim: float, form: str = "add") -> None:
        super().__init__()
        if form not in ("add", "convex"):
            raise ValueError(f"unknown regulariser form {form!r}; choose 'add' or 'convex'")
        self.base = base
        self.gamma = float(gamma)
        self.reg_sim = float(reg_sim)
        self.form = form

    @property
    def has_proxies(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base, "has_proxies", False))

    def proxy_parameters(self) -> list[nn.Parameter]:
        return self.base.proxy_parameters()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        base = self.base(embeddings, labels)
        embeddings, labels = check_inputs(embeddings, labels)
        with fp32(embeddings.device):
            reg = similarity_regularizer(similarity(normalize(embeddings)), self.reg_sim)
            if self.form == "add":
                loss = base + self.gamma * reg
            else:
                loss = (1.0 - self.gamma) * base + self.gamma * reg
        self._terms = {**self.base._terms, "reg": reg.detach()}
        return loss

    def hparams(self) -> dict:
        return {**self.base.hparams(), "reg_gamma": self.gamma, "reg_sim": self.reg_sim, "reg_form": self.form}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = super().__getattr__("base")
            return getattr(base, name)
