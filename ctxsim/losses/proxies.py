"""Proxy baselines: Proxy-Anchor (own code), Proxy-NCA and Normalized-Softmax (PML)
(reference-implementation §2.1, §2.2). Proxies are sized by the number of classes; the 224 code's one proxy per
training image (reference-implementation §2.1 bug, §9.4) only behind proxies_per_image=True."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._base import MetricLoss, check_inputs, fp32, normalize


def _num_proxies(num_classes, proxies_per_image: bool, num_train_images) -> int:
    if proxies_per_image:
        if num_train_images is None or int(num_train_images) < 1:
            raise ValueError("proxies_per_image=True needs num_train_images= (the 224 code's proxy count)")
        return int(num_train_images)
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("a proxy loss needs num_classes= (number of training classes, >= 1)")
    return int(num_classes)


class _ProxyLoss(MetricLoss):
    """Shared label handling: labels must be 0..P-1, or ids listed in class_ids (mapped to 0..C-1)."""

    has_proxies = True

    def __init__(self, num_proxies: int, class_ids: Sequence[int] | torch.Tensor | None) -> None:
        super().__init__()
        self.num_proxies = num_proxies
        if class_ids is not None:
            ids = torch.as_tensor(class_ids, dtype=torch.long).reshape(-1)
            sorted_ids = torch.unique(ids)
            if sorted_ids.numel() != ids.numel():
                raise ValueError("class_ids must not repeat")
            if sorted_ids.numel() > num_proxies:
                raise ValueError(f"{sorted_ids.numel()} class_ids but only {num_proxies} proxies")
            self.register_buffer("class_ids", sorted_ids, persistent=False)
        else:
            self.class_ids = None

    def _indices(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        if self.class_ids is not None:
            ids = self.class_ids.to(labels.device)
            pos = torch.searchsorted(ids, labels).clamp(max=ids.numel() - 1)
            if not bool((ids[pos] == labels).all()):
                raise ValueError("a label is not among the loss's class_ids")
            return pos
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_proxies:
            raise ValueError(f"proxy-loss labels must lie in 0..{self.num_proxies - 1} (got {lo}..{hi}); "
                             "remap them or pass class_ids=")
        return labels

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum x^2 + 1e-12), the Proxy-Anchor code's normalisation."""
    return x / torch.sqrt(x.square().sum(1, keepdim=True) + 1e-12)


class ProxyAnchorLoss(_ProxyLoss):
    """Proxy-Anchor (Kim et al. 2020), mrg .1, alpha 32 (reference-implementation §2.1 "Proxy_Anchor").

    pos = sum over proxies with positives of log(1 + sum_pos exp(-alpha(cos - mrg))) / #those;
    neg = sum over all proxies of log(1 + sum_neg exp(alpha(cos + mrg))) / #proxies.
    """

    def __init__(self, num_classes: int | None = None, embedding_size: int = 512, mrg: float = 0.1,
                 alpha: float = 32.0, proxies_per_image: bool = False, num_train_images: int | None = None,
                 class_ids=None) -> None:
        n = _num_proxies(num_classes, proxies_per_image, num_train_images)
        super().__init__(n, class_ids)
        self.embedding_size = int(embedding_size)
        self.mrg = float(mrg)
        self.alpha = float(alpha)
        self.proxies_per_image = bool(proxies_per_image)
        self.proxies = nn.Parameter(torch.randn(n, self.embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embedding size {embeddings.shape[1]} != proxies' {self.embedding_size}")
        idx = self._indices(labels)
        with fp32(embeddings.device):
            cos = l2_norm(embeddings.float()) @ l2_norm(self.proxies.float()).T  # B x P
            pos_mask = torch.zeros_like(cos, dtype=torch.bool)
            pos_mask[torch.arange(cos.shape[0], device=cos.device), idx] = True
            pos_exp = torch.exp(-self.alpha * (cos - self.mrg))
            neg_exp = torch.exp(self.alpha * (cos + self.mrg))
            p_sum = torch.where(pos_mask, pos_exp, torch.zeros_like(pos_exp)).sum(0)
            n_sum = torch.where(pos_mask, torch.zeros_like(neg_exp), neg_exp).sum(0)
            num_valid = pos_mask.any(0).sum()
            pos = torch.log1p(p_sum).sum() / num_valid
            neg = torch.log1p(n_sum).sum() / self.num_proxies
            loss = pos + neg
        self._record(pos=pos, neg=neg)
        return loss

    def hparams(self) -> dict:
        return {"num_proxies": self.num_proxies, "embedding_size": self.embedding_size, "mrg": self.mrg,
                "alpha": self.alpha, "proxies_per_image": self.proxies_per_image}


class _PMLProxyLoss(_ProxyLoss):
    term = "loss"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings, labels = check_inputs(embeddings, labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embedding size {embeddings.shape[1]} != proxies' {self.embedding_size}")
        idx = self._indices(labels)
        with fp32(embeddings.device):
            loss = self.loss_func(normalize(embeddings), idx)
        self._record(**{self.term: loss})
        return loss


class ProxyNCALoss(_PMLProxyLoss):
    """PML ProxyNCALoss, softmax_scale 9 (224 train.py) or 10 (256 main.py) (reference-implementation §2.1, §2.2)."""

    term = "proxy_nca"

    def __init__(self, num_classes: int | None = None, embedding_size: int = 512, softmax_scale: float = 10.0,
                 proxies_per_image: bool = False, num_train_images: int | None = None, class_ids=None) -> None:
        from pytorch_metric_learning import losses

        n = _num_proxies(num_classes, proxies_per_image, num_train_images)
        super().__init__(n, class_ids)
        self.embedding_size = int(embedding_size)
        self.proxies_per_image = bool(proxies_per_image)
        self.loss_func = losses.ProxyNCALoss(n, self.embedding_size, softmax_scale=float(softmax_scale))

    def hparams(self) -> dict:
        return {"num_proxies": self.num_proxies, "embedding_size": self.embedding_size,
                "softmax_scale": self.loss_func.softmax_scale, "proxies_per_image": self.proxies_per_image}


class NormSoftmaxLoss(_PMLProxyLoss):
    """PML NormalizedSoftmaxLoss, temperature .05 (reference-implementation §2.2 "normsoftmax")."""

    term = "normsoftmax"

    def __init__(self, num_classes: int | None = None, embedding_size: int = 512, temperature: float = 0.05,
                 class_ids=None) -> None:
        from pytorch_metric_learning import losses

        n = _num_proxies(num_classes, False, None)
        super().__init__(n, class_ids)
        self.embedding_size = int(embedding_size)
        self.loss_func = losses.NormalizedSoftmaxLoss(n, self.embedding_size, temperature=float(temperature))

    def hparams(self) -> dict:
        return {"num_classes": self.num_proxies, "embedding_size": self.embedding_size,
                "temperature": self.loss_func.temperature}
