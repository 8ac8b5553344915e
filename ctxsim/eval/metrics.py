"""Retrieval metrics: Recall@K, MAP@R and R-precision from exact k-NN (reference-implementation §5).

Definitions (pytorch-metric-learning's AccuracyCalculator): for a query with label y, R = number of
gallery items labelled y (minus the query itself when query == gallery);
* R@K: 1 if a same-label item is among the K nearest neighbours;
* MAP@R = (1/R) * sum_{r<=R} P@r * rel(r);  RP = (#same-label in the top R) / R.
Lone queries (R == 0) are left out of MAP@R and RP as AccuracyCalculator does, and by default out
of R@K too (so R@1 equals AccuracyCalculator's precision_at_1); lone_queries="miss" counts them as
misses in R@K instead, as the reference's `test_ks` does. Neighbour order: see ctxsim.eval.knn.

Only the neighbours the metrics need are fetched, a block of queries at a time within a memory
budget (``memory_gb``; ctxsim.eval.streaming): each query's first pass goes to depth R for MAP@R/RP
(when requested), at least min(max K, 32); queries without a same-label item in that depth are
searched again to the depth first_hit is reported to (at least max K, which is the only thing
Recall@K needs of them). No query x max(R) matrix is ever made, whatever the class sizes.

Scores are float32 by default (faiss or torch matmul). ``precision="float64"`` scores in float64
with torch matmul instead (faiss is float32-only), so that items whose scores differ by less than
float32 resolves (dense data has many such near-ties) are ranked as a float64 reference ranks them;
it costs a float64 copy of the embeddings, slower matmuls and about half the rows per block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch

from ctxsim.eval.knn import CUDA_CHUNK_BYTES, DEFAULT_CHUNK_BYTES, FaissSearcher, TorchSearcher, _as_matrix, resolve_backend
from ctxsim.eval.streaming import (
    DEFAULT_MEMORY_GB,  # noqa: F401  (re-exported: the budget when neither argument nor environment sets one)
    MEMORY_ENV,  # noqa: F401  (re-exported)
    PRECISIONS,  # noqa: F401  (re-exported: the precision argument's values)
    SCORE_SHARE,
    budget_bytes,
    resolve_precision,
    stream_query_stats,
    topk_bytes_per_slot,
)

log = logging.getLogger(__name__)

LONE_QUERY_MODES = ("exclude", "miss")
# Depth of the first pass when Recall@K asks for more neighbours than MAP@R does.
FIRST_PASS_DEPTH = 32


def _as_labels(labels, n: int, name: str, device: torch.device) -> torch.Tensor:
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} labels must be a 1-D array of length {n}, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError(f"{name} labels must be integers")
        t = t.round()
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} labels must be integers, got {t.dtype}")
    return t.detach().to(device=device, dtype=torch.long)


def _check_ks(ks) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    if not isinstance(ks, Iterable):
        raise ValueError(f"ks must be a sequence of positive ints, got {ks!r}")
    out = []
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or int(k) < 1:
            raise ValueError(f"ks must hold positive ints, got {k!r}")
        out.append(int(k))
    return tuple(sorted(set(out)))


def relevant_counts(q_labels: torch.Tensor, g_labels: torch.Tensor, self_in_gallery: bool) -> torch.Tensor:
    """R per query: gallery items sharing the query's label (the query itself not counted)."""
    uniq, counts = torch.unique(g_labels, return_counts=True)
    pos = torch.searchsorted(uniq, q_labels).clamp(max=len(uniq) - 1)
    r = torch.where(uniq[pos] == q_labels, counts[pos], torch.zeros_like(pos))
    return r - 1 if self_in_gallery else r


def query_stats(q_emb, q_labels, g_emb=None, g_labels=None, max_k: int = 1, map_at_r: bool = True,
                backend: str = "auto", chunk_rows: int | None = None, full_map: bool = False,
                memory_gb: float | None = None, precision: str = "float32") -> dict[str, torch.Tensor]:
    """Per-query results: "first_hit" (1-based rank of the first same-label neighbour, 0 when
    beyond max(max_k, D) with D = max(max R, min(max_k, 32)) under map_at_r, min(max_k, 32) without,
    both capped at the number of candidates), "R", "lone", and, with map_at_r, "ap_at_r" and
    "r_precision" (NaN for lone queries); with full_map, "ap" (average precision over the whole
    ranking, NaN for lone queries). Arguments as retrieval_metrics.

    Memory: the work is held to `memory_gb` GiB (None: $CTXSIM_EVAL_MEMORY_GB, else
    DEFAULT_MEMORY_GB), beyond the embeddings themselves. Paths (ctxsim.eval.streaming; logged at
    debug level with their block sizes):
    * top-k path, the usual one: queries ordered by the depth they need (max(R, min(max_k, 32))) and
      cut into blocks whose neighbour lists fit the budget; per block the exact top-depth lists give
      first_hit, AP@R and RP (integer hit counts, float64 only per hit), then are dropped. Queries
      with no same-label item in their depth get the second pass to the reported depth above, in
      blocks too (or by counting on score rows when even one query's list would not fit).
    * threshold path, the fallback for a query whose depth alone does not fit the budget (a class
      larger than the budget allows even for a block of one query) and whose score row is smaller
      than that list: its full score row (a block of rows at a time, one row worked on) ranks its
      same-label items in the searchers' tie order (score descending, index ascending) by counting
      the other items above each of them, which is what AP@R, RP and first_hit need up to rank R.
      Its scores come from torch's matmul (the torch backend's kernel; with faiss they can differ by
      float32 rounding, as the two backends can).
    Lone queries are not searched (no same-label item to find). The results are those of one
    search of depth D for all queries, up to the order of float64 sums.

    Precision: "float32" (the default) scores as above. "float64" converts the embeddings to float64
    and scores them with torch matmul on their device, every path included (the threshold path and
    the second pass too), whatever backend="auto" would pick: faiss is float32-only, so
    backend="faiss" with "float64" is a ValueError. The rankings are then those of float64 scores
    (equal, up to float64 rounding, to a float64 reference computed one query at a time), where
    float32 scores can tie or swap items whose scores differ by less than float32 resolves. The
    budget is planned with 8-byte scores (TOPK_BYTES_PER_SLOT_FLOAT64, THRESHOLD_BYTES_PER_COLUMN_FLOAT64
    of ctxsim.eval.streaming; the torch searcher's score block holds half the rows); the float64
    copy of the embeddings is not part of the budget."""
    dtype = resolve_precision(precision)
    if dtype == torch.float64 and backend == "faiss":
        raise ValueError("precision='float64' needs backend='torch' or 'auto' (faiss scores in float32 only)")
    q = _as_matrix(q_emb, "query", dtype)
    self_mode = g_emb is None or (g_emb is q_emb and (g_labels is None or g_labels is q_labels))
    if self_mode:
        g, ql = q, _as_labels(q_labels, q.shape[0], "query", q.device)
        gl = ql
    else:
        if g_labels is None:
            raise ValueError("g_labels is required when g_emb is given")
        g = _as_matrix(g_emb, "gallery", dtype).to(q.device)
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query and gallery dimensions differ: {q.shape[1]} vs {g.shape[1]}")
        ql = _as_labels(q_labels, q.shape[0], "query", q.device)
        gl = _as_labels(g_labels, g.shape[0], "gallery", q.device)
    if self_mode and g_labels is not None and g_labels is not q_labels:
        raise ValueError("g_labels given without g_emb")
    if self_mode and q.shape[0] < 2:
        raise ValueError("query == gallery needs at least 2 embeddings")
    n_cand = g.shape[0] - (1 if self_mode else 0)
    backend = resolve_backend(backend, q.device, q.shape[1])
    if dtype == torch.float64:
        backend = "torch"  # auto may have picked faiss: float32 only
        log.debug("precision float64: float64 scores from torch matmul (faiss is float32-only)")

    budget = budget_bytes(memory_gb)

    r = relevant_counts(ql, gl, self_mode)
    lone = r <= 0
    r_max = int(r.max()) if len(r) else 0
    k0 = max(min(max_k, FIRST_PASS_DEPTH), 1)
    depth = min(n_cand, max(r_max if map_at_r else 0, k0))  # one first pass for all would go this deep
    report_depth = max(depth, min(max_k, n_cand))  # ... and the second pass to max K
    need = (r if map_at_r else torch.zeros_like(r)).clamp(min=k0).clamp(max=n_cand)
    searcher = _make_searcher(q, g, self_mode, backend, chunk_rows, budget)
    # reference-implementation §5 / AccuracyCalculator: AP@R sums P@r * rel(r) over the first R ranks, divided by R
    out = stream_query_stats(searcher, q, g, ql, gl, r, need, report_depth, self_mode, map_at_r, budget)
    out = {"first_hit": out["first_hit"], "R": r.cpu(), "lone": lone.cpu(),
           **{k: v for k, v in out.items() if k != "first_hit"}}
    if full_map:
        out["ap"] = _full_ap(searcher, ql, gl, r, lone, n_cand, chunk_rows, budget)
    return out


def _make_searcher(q: torch.Tensor, g: torch.Tensor, self_mode: bool, backend: str, chunk_rows: int | None, budget: int):
    """make_searcher, with the torch searcher's block of scores held to a share of the budget."""
    if backend == "faiss":
        return FaissSearcher(q, g, self_mode)
    cap = CUDA_CHUNK_BYTES if q.is_cuda else DEFAULT_CHUNK_BYTES
    return TorchSearcher(q, g, self_mode, chunk_bytes=max(1, min(cap, int(budget * SCORE_SHARE))), chunk_rows=chunk_rows)


def _full_ap(searcher, ql: torch.Tensor, gl: torch.Tensor, r: torch.Tensor, lone: torch.Tensor, n_cand: int,
             chunk_rows: int | None, budget: int) -> torch.Tensor:
    """Average precision of each query over its whole ranking (mAP of the 224 CUB/Cars evaluation,
    reference-implementation §5), NaN for lone queries; the full sort is done a block of queries at a
    time (at most 2**22 neighbour slots, fewer when the budget asks)."""
    n = ql.shape[0]
    ap = torch.full((n,), float("nan"), dtype=torch.float64)
    slots = min(2**22, budget // (topk_bytes_per_slot(searcher.q.dtype) + 32))  # + the float64 rel and its cumsum
    block = chunk_rows or max(1, min(n, slots // max(n_cand, 1)))
    ranks = torch.arange(1, n_cand + 1, device=ql.device, dtype=torch.float64)
    for start in range(0, n, block):
        rows = torch.arange(start, min(n, start + block), device=ql.device)
        _, nbr = searcher.topk(rows, n_cand)
        rel = ((nbr >= 0) & (gl[nbr.clamp(min=0)] == ql[rows].view(-1, 1))).to(torch.float64)
        vals = (rel * rel.cumsum(1) / ranks).sum(1) / r[rows].clamp(min=1).to(torch.float64)
        ap[start:start + len(rows)] = vals.cpu()
    return torch.where(lone.cpu(), torch.full_like(ap, float("nan")), ap)


def retrieval_metrics(q_emb, q_labels, g_emb=None, g_labels=None, ks=(1, 2, 4, 8), map_at_r: bool = True,
                      backend: str = "auto", lone_queries: str = "exclude",
                      chunk_rows: int | None = None, full_map: bool = False, memory_gb: float | None = None,
                      precision: str = "float32") -> dict[str, float]:
    """Recall@K for each K in `ks`, and MAP@R and R-precision ("MAP@R", "RP") when map_at_r, and mAP
    over the whole ranking ("mAP") when full_map, as fractions in [0, 1]. Similarity is the inner
    product (pass L2-normalised embeddings for cosine).

    g_emb=None (or g_emb is q_emb): query == gallery, each query's own entry excluded by index.
    Otherwise query and gallery are disjoint sets (In-Shop). backend: "auto", "faiss" or "torch";
    lone_queries: "exclude" (AccuracyCalculator) or "miss"; chunk_rows: queries per score block
    (torch backend); memory_gb: working-memory budget in GiB (None: $CTXSIM_EVAL_MEMORY_GB, else
    DEFAULT_MEMORY_GB = 2), see query_stats; precision: "float32" (default) or "float64" (scores in
    float64 by torch matmul, see query_stats). A metric with no query to average over is NaN.
    ``retrieval_results`` also returns the per-query arrays these are means of.
    """
    return retrieval_results(q_emb, q_labels, g_emb, g_labels, ks=ks, map_at_r=map_at_r, backend=backend,
                             lone_queries=lone_queries, chunk_rows=chunk_rows, full_map=full_map, memory_gb=memory_gb,
                             precision=precision)[0]


def retrieval_results(q_emb, q_labels, g_emb=None, g_labels=None, ks=(1, 2, 4, 8), map_at_r: bool = True,
                      backend: str = "auto", lone_queries: str = "exclude", chunk_rows: int | None = None,
                      full_map: bool = False, memory_gb: float | None = None,
                      precision: str = "float32") -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """``(retrieval_metrics(...), query_stats(...))``: the aggregate metrics and the per-query results
    they average (``ctxsim.eval.per_query.PerQuery.from_stats`` keeps hit@1 and AP@R of each query)."""
    ks = _check_ks(ks)
    if not ks and not map_at_r:
        raise ValueError("nothing to compute: ks is empty and map_at_r is False")
    if lone_queries not in LONE_QUERY_MODES:
        raise ValueError(f"lone_queries must be one of {', '.join(LONE_QUERY_MODES)}, got {lone_queries!r}")
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    st = query_stats(q_emb, q_labels, g_emb, g_labels, max_k=max(ks, default=1), map_at_r=map_at_r,
                     backend=backend, chunk_rows=chunk_rows, full_map=full_map, memory_gb=memory_gb, precision=precision)
    lone = st["lone"]
    if bool(lone.all()):
        log.warning("no query has a same-label item in the gallery: metrics are NaN")
    elif bool(lone.any()):
        log.info("%d of %d queries are lone (no same-label gallery item)", int(lone.sum()), len(lone))
    counted = ~lone if lone_queries == "exclude" else torch.ones_like(lone)
    first = st["first_hit"][counted]
    out: dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = float(((first >= 1) & (first <= k)).to(torch.float64).mean()) if len(first) else float("nan")
    if map_at_r:
        keep = ~lone
        out["MAP@R"] = float(st["ap_at_r"][keep].mean()) if bool(keep.any()) else float("nan")
        out["RP"] = float(st["r_precision"][keep].mean()) if bool(keep.any()) else float("nan")
    if full_map:
        keep = ~lone
        out["mAP"] = float(st["ap"][keep].mean()) if bool(keep.any()) else float("nan")
    return out, st
