"""Embedding extraction for evaluation (reference-implementation §5: eval transforms, L2-normalised outputs)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def extract_embeddings(model: torch.nn.Module, loader, device="cpu", progress: Callable | None = None,
                       amp: bool = False, keep_on_device: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs `model` in eval mode without gradients over a loader yielding (images, labels, ...).

    Returns (embeddings [N, D] float32, labels [N] int64), on the CPU unless keep_on_device.
    progress(done_batches, total_batches or None) is called after each batch. amp=True runs the
    forward under CUDA autocast (ignored on CPU). The model's training mode is restored afterwards.
    """
    device = torch.device(device)
    try:
        total = len(loader)
    except TypeError:
        total = None
    use_amp = bool(amp) and device.type == "cuda"
    if amp and not use_amp:
        log.debug("amp requested on %s: ignored (CUDA only)", device)
    was_training = model.training
    model.eval()
    embs: list[torch.Tensor] = []
    labs: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for done, batch in enumerate(loader, start=1):
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ValueError("the loader must yield (images, labels) batches")
                images, labels = batch[0], batch[1]
                images = images.to(device, non_blocking=True)
                with torch.autocast(device_type="cuda", enabled=use_amp):
                    out = model(images)
                if out.dim() != 2 or out.shape[0] != images.shape[0]:
                    raise ValueError(f"model output must be [batch, dim], got shape {tuple(out.shape)}")
                labels = torch.as_tensor(labels).reshape(-1)
                if labels.shape[0] != out.shape[0]:
                    raise ValueError(f"batch has {out.shape[0]} images but {labels.shape[0]} labels")
                out = out.float()
                embs.append(out if keep_on_device else out.cpu())
                labs.append(labels.to(out.device if keep_on_device else "cpu", torch.long))
                if progress is not None:
                    progress(done, total)
    finally:
        model.train(was_training)
    if not embs:
        raise ValueError("the loader yielded no batches")
    return torch.cat(embs), torch.cat(labs)
