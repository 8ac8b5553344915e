"""Evaluate a model on a DataBundle's retrieval split (reference-implementation.md §5): extract, then
exact metrics.

``evaluate_bundle`` is the one place that turns a model and a data bundle into retrieval metrics:
training's evaluations, ``ctxsim eval`` and the evaluation of imported reference models all call it
(through ``ctxsim.train.evaluation``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ctxsim.eval.extract import extract_embeddings
from ctxsim.eval.metrics import retrieval_results
from ctxsim.eval.per_query import PerQuery


def evaluate_bundle(model: torch.nn.Module, bundle, device="cpu", batch_size: int = 128, num_workers: int = 0,
                    ks=None, map_at_r: bool = True, amp: bool = False, backend: str = "auto",
                    progress: Callable | None = None, return_embeddings: bool = False, full_map: bool = False,
                    per_query: bool = False, memory_gb: float | None = None, precision: str = "float32"):
    """Recall@K (the bundle's standard K list unless `ks`), MAP@R and RP of `model` on
    `bundle.query` (against `bundle.gallery`, or the query set itself with self excluded when the
    gallery is None), as python floats. progress(done, total) counts batches over query then
    gallery. `full_map` adds "mAP" over the whole ranking. With `return_embeddings`, returns
    ``(metrics, (q, q_labels, g, g_labels))`` with the embeddings on the CPU (g and g_labels None
    without a gallery); with `per_query`, a ``ctxsim.eval.per_query.PerQuery`` is appended to what is
    returned (``(metrics, pq)`` or ``(metrics, embeddings, pq)``). ``memory_gb``: the metrics' working
    memory budget (ctxsim.eval.metrics.query_stats; None: $CTXSIM_EVAL_MEMORY_GB or the default);
    ``precision``: the metrics' scores, "float32" or "float64" (torch matmul, see query_stats)."""
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}")
    device = torch.device(device)
    sets = [bundle.query] + ([bundle.gallery] if getattr(bundle, "gallery", None) is not None else [])
    loaders = [DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
               for ds in sets]
    total = sum(len(dl) for dl in loaders)
    offset = 0

    def report(done: int, _total) -> None:
        if progress is not None:
            progress(offset + done, total)

    keep = device.type == "cuda"  # the k-NN search runs where the embeddings are
    outs = []
    for dl in loaders:
        outs.append(extract_embeddings(model, dl, device=device, progress=report, amp=amp, keep_on_device=keep))
        offset += len(dl)
    (q, ql), (g, gl) = outs[0], (outs[1] if len(outs) > 1 else (None, None))
    ks = tuple(ks) if ks is not None else tuple(bundle.ks)
    metrics, stats = retrieval_results(q, ql, g, gl, ks=ks, map_at_r=map_at_r, backend=backend, full_map=full_map,
                                       memory_gb=memory_gb, precision=precision)
    metrics = {k: float(v) for k, v in metrics.items()}
    if not return_embeddings and not per_query:
        return metrics
    out: list = [metrics]
    if return_embeddings:
        out.append(tuple(t.cpu() if t is not None else None for t in (q, ql, g, gl)))
    if per_query:
        out.append(PerQuery.from_stats(stats, ql))
    return tuple(out)
