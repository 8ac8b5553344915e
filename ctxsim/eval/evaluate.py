"""Evaluate a model on a DataBundle's retrieval split (seed-spec §5): extract, then exact metrics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ctxsim.eval.extract import extract_embeddings
from ctxsim.eval.metrics import retrieval_metrics


def evaluate_bundle(model: torch.nn.Module, bundle, device="cpu", batch_size: int = 128, num_workers: int = 0,
                    ks=None, map_at_r: bool = True, amp: bool = False, backend: str = "auto",
                    progress: Callable | None = None) -> dict[str, float]:
    """Recall@K (the bundle's standard K list unless `ks`), MAP@R and RP of `model` on
    `bundle.query` (against `bundle.gallery`, or the query set itself with self excluded when the
    gallery is None). progress(done, total) counts batches over query then gallery."""
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    sets = [bundle.query] + ([bundle.gallery] if getattr(bundle, "gallery", None) is not None else [])
    loaders = [DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          pin_memory=torch.device(device).type == "cuda") for ds in sets]
    total = sum(len(dl) for dl in loaders)
    offset = 0

    def report(done: int, _total) -> None:
        if progress is not None:
            progress(offset + done, total)

    keep = torch.device(device).type == "cuda"
    outs = []
    for dl in loaders:
        outs.append(extract_embeddings(model, dl, device=device, progress=report, amp=amp, keep_on_device=keep))
        offset += len(dl)
    ks = tuple(ks) if ks is not None else tuple(bundle.ks)
    if len(outs) == 1:
        return retrieval_metrics(outs[0][0], outs[0][1], ks=ks, map_at_r=map_at_r, backend=backend)
    (q, ql), (g, gl) = outs
    return retrieval_metrics(q, ql, g, gl, ks=ks, map_at_r=map_at_r, backend=backend)
