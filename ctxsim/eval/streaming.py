"""Per-query retrieval statistics computed a block of queries at a time, within a memory budget.

``ctxsim.eval.metrics.query_stats`` calls ``stream_query_stats``; the definitions of the metrics are
in ``ctxsim.eval.metrics``. Two paths, chosen per query:

* top-k path: the queries are ordered by the depth they need (max(R, first-pass depth), R = the
  number of same-label gallery items) and cut into blocks whose neighbour lists fit the budget
  (``rows x depth x TOPK_BYTES_PER_SLOT`` bytes; a query's depth is raised to the reported first-hit
  depth when that is not much deeper, see SHALLOW_SLACK); each block takes its exact top-`depth`
  from the searcher, keeps only the per-query results, and frees the lists. Hit counts are cumulated as
  int32 and only the hit positions are turned into float64 terms, so no block x depth float64 tensor
  is made. Queries without a same-label item in their block's depth are searched again, a block at a
  time, to the depth first_hit is reported to (``report_depth``); when even that depth does not fit
  for one query, their first hit is counted on score rows (below).
* threshold path (fallback): a query whose depth does not fit the budget even alone (a class larger
  than the budget allows) is served from its score row against the whole gallery (torch matmul,
  ``THRESHOLD_BYTES_PER_COLUMN`` bytes per gallery column while one row is worked on, a block of score
  rows at a time): the same-label items are put in the searchers' canonical order (score descending,
  index ascending) and the rank of each is its position among them plus the number of other items
  that come before it (counted on the sorted other scores; ties resolved by index). It is used only
  when it needs less memory than the top-k list of that one query.

The budget covers the working memory of the search and of the metrics, not the embeddings
themselves (nor faiss's copy of them in its index, nor the float64 copy of them that
precision="float64" scores with).

Precision (``precision`` of ``ctxsim.eval.metrics.query_stats``): "float32", the default, scores as
the searchers always have; "float64" scores in float64 (torch matmul only: faiss is float32-only),
so that near-ties float32 cannot resolve are ranked as a float64 reference ranks them. The paths
above then hold 8-byte scores: the per-slot and per-column costs below have float64 counterparts
(``topk_bytes_per_slot``, ``threshold_bytes_per_column``) and the torch searcher's score block holds
half the rows.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from ctxsim.names import EVAL_PRECISIONS

log = logging.getLogger(__name__)

# Working memory of evaluation (GiB = 2**30 bytes) when neither the argument nor the environment says:
# fits a 24 GB machine beside a model.
DEFAULT_MEMORY_GB = 2.0
MEMORY_ENV = "CTXSIM_EVAL_MEMORY_GB"
# Peak bytes per neighbour slot of the top-k path: the searcher's lists, their canonical ordering and
# the concatenation of its chunks, then neighbour labels, hit masks, int32 counts and the float64
# terms of the hits (measured 25-70 on the CPU with both backends, the most when every slot is a hit
# and near-equal scores make faiss search deeper; rounded up).
TOPK_BYTES_PER_SLOT = 96
# Bytes per gallery column of the threshold path: the float32 score row plus the masks, the copy of
# the other items' scores being sorted and comparison temporaries of the row worked on.
THRESHOLD_BYTES_PER_COLUMN = 24
# The same with float64 scores: the searcher's list, the two copies its canonical ordering makes and
# the concatenation of its chunks widen from 4 to 8 bytes (+16); on the threshold path the score rows
# and the sorted copy of the other items' scores, which dominate, double.
TOPK_BYTES_PER_SLOT_FLOAT64 = 112
THRESHOLD_BYTES_PER_COLUMN_FLOAT64 = 48
# precision argument -> dtype of the embeddings and scores
PRECISIONS = dict(zip(EVAL_PRECISIONS, (torch.float32, torch.float64)))
# Share of the budget the torch searcher may use for one block of raw scores (queries x gallery).
SCORE_SHARE = 0.25
# A query's first pass goes straight to the reported first-hit depth when that is at most twice its
# own depth or this many ranks deeper (then it never needs the second pass).
SHALLOW_SLACK = 64
_GIB = 2**30


def resolve_memory_gb(memory_gb: float | None = None) -> float:
    """The budget in GiB: the argument, else $CTXSIM_EVAL_MEMORY_GB, else DEFAULT_MEMORY_GB; a value
    that is not a positive finite number is a ValueError naming where it came from."""
    source = "memory_gb"
    value = memory_gb
    if value is None:
        env = os.environ.get(MEMORY_ENV, "").strip()
        if not env:
            return DEFAULT_MEMORY_GB
        source = f"${MEMORY_ENV}"
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"{source} must be a positive number of GiB, got {env!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{source} must be a positive number of GiB, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{source} must be a positive number of GiB, got {value!r}")
    return value


def resolve_precision(precision: str = "float32") -> torch.dtype:
    """The score dtype of `precision` ("float32" or "float64"); anything else is a ValueError."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return PRECISIONS[precision]


def topk_bytes_per_slot(dtype: torch.dtype = torch.float32) -> int:
    """Peak bytes per neighbour slot of the top-k path with scores of `dtype`."""
    return TOPK_BYTES_PER_SLOT_FLOAT64 if dtype == torch.float64 else TOPK_BYTES_PER_SLOT


def threshold_bytes_per_column(dtype: torch.dtype = torch.float32) -> int:
    """Bytes per gallery column (per score row of a block) of the threshold path with scores of `dtype`."""
    return THRESHOLD_BYTES_PER_COLUMN_FLOAT64 if dtype == torch.float64 else THRESHOLD_BYTES_PER_COLUMN


def budget_bytes(memory_gb: float | None = None) -> int:
    """The budget in bytes (at least 1)."""
    return max(1, int(resolve_memory_gb(memory_gb) * _GIB))


def plan_blocks(depths: np.ndarray, budget: int, bytes_per_slot: int = TOPK_BYTES_PER_SLOT) -> list[tuple[int, int]]:
    """Cuts `depths` (non-decreasing) into consecutive blocks [start, end) with
    (end - start) * depths[end - 1] * bytes_per_slot <= budget; a block of one is allowed to exceed it."""
    blocks, start, m = [], 0, len(depths)
    while start < m:
        lo, hi = start + 1, m  # the largest end that fits, by bisection (the cost grows with end)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if (mid - start) * int(depths[mid - 1]) * bytes_per_slot <= budget:
                lo = mid
            else:
                hi = mid - 1
        blocks.append((start, lo))
        start = lo
    return blocks


def _codes(ql: torch.Tensor, gl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as compact int32 codes (half the bytes of int64 labels gathered per neighbour slot)."""
    uniq, inv = torch.unique(torch.cat([ql, gl]), return_inverse=True)
    dtype = torch.int32 if len(uniq) < 2**31 else torch.int64
    inv = inv.to(dtype)
    return inv[: len(ql)], inv[len(ql):]


def _block_stats(rel: torch.Tensor, r: torch.Tensor, map_at_r: bool):
    """first hit (1-based, 0 when none), and with map_at_r the AP@R and RP numerators of each row of
    the relevance mask `rel` [b, d] (d >= R of every row: AP@R only looks at the first R ranks)."""
    b, d = rel.shape
    has = rel.any(1)
    first = torch.where(has, rel.to(torch.int8).argmax(1) + 1, torch.zeros(b, dtype=torch.long, device=rel.device))
    if not map_at_r:
        return first, None, None
    within = torch.arange(d, device=rel.device).view(1, -1) < r.view(-1, 1)
    hits = rel & within
    del within
    rp_num = hits.sum(1)  # exact integer counts
    cnt = hits.cumsum(1, dtype=torch.int32)  # hits up to and including each rank
    at = hits.nonzero()  # row-major: (row, column) of each hit
    j = cnt[hits].to(torch.float64)  # the j-th hit of its row: P@rank * rank
    del cnt, hits
    terms = j.div_(at[:, 1].to(torch.float64).add_(1))  # P@rank at each hit, as today's float64 terms
    ap_num = torch.zeros(b, dtype=torch.float64, device=rel.device).index_add_(0, at[:, 0], terms)
    return first, ap_num, rp_num


def _score_rows(q: torch.Tensor, g: torch.Tensor, rows: torch.Tensor, exclude_self: bool) -> torch.Tensor:
    s = q[rows] @ g.T  # the expression TorchSearcher scores with (float64 when the embeddings are)
    if exclude_self:
        s[torch.arange(len(rows), device=s.device), rows] = float("-inf")
    return s


def _threshold_row(s: np.ndarray, pos_mask: np.ndarray, other_mask: np.ndarray, r: int, report_depth: int,
                   need_ap: bool) -> tuple[int, float, float]:
    """first hit, AP@R and RP of one query from its score row `s` over the gallery; pos_mask: the
    same-label items, other_mask: every other candidate (the query itself in neither)."""
    pos = np.flatnonzero(pos_mask)  # ascending index
    if len(pos) == 0:
        return 0, float("nan"), float("nan")
    ps = s[pos]
    order = np.argsort(-ps, kind="stable")  # canonical order: score descending, index ascending
    pos, ps = pos[order], ps[order]
    if not need_ap:  # the first hit only: count what comes before the best same-label item
        p, v = int(pos[0]), ps[0]
        above = int(np.count_nonzero((s > v) & other_mask)) + int(np.count_nonzero((s[:p] == v) & other_mask[:p]))
        rank = 1 + above
        return (rank if rank <= report_depth else 0), float("nan"), float("nan")
    others = s[other_mask]
    others.sort()
    right = np.searchsorted(others, ps, side="right")
    above = len(others) - right
    tied = np.flatnonzero(right - np.searchsorted(others, ps, side="left"))
    for t in tied:  # equal scores: the lower index comes first
        p = int(pos[t])
        above[t] += int(np.count_nonzero((s[:p] == ps[t]) & other_mask[:p]))
    j = np.arange(1, len(pos) + 1)  # the j-th same-label item in canonical order
    rank = j + above
    first = int(rank[0]) if rank[0] <= report_depth else 0
    sel = rank <= r
    ap_num = float(np.sum(j[sel].astype(np.float64) / rank[sel].astype(np.float64)))
    return first, ap_num, float(np.count_nonzero(sel))


def _threshold_path(q, g, ql, gl, r, rows_all: torch.Tensor, exclude_self: bool, report_depth: int, need_ap: bool,
                    budget: int, first, ap_num, rp_num) -> None:
    """Fills first (and with need_ap ap_num / rp_num) for `rows_all` from blocks of score rows (in
    the embeddings' dtype)."""
    ng = g.shape[0]
    per_block = max(1, min(len(rows_all), budget // max(1, ng * threshold_bytes_per_column(g.dtype))))
    log.debug("%s: %d queries, %d score rows per block (%d gallery columns)",
              "threshold path" if need_ap else "second pass (threshold)", len(rows_all), per_block, ng)
    gl_np = gl.cpu().numpy()
    for start in range(0, len(rows_all), per_block):
        rows = rows_all[start : start + per_block]
        scores = _score_rows(q, g, rows, exclude_self).cpu().numpy()
        for i, row in enumerate(rows.tolist()):
            label = ql[row].item()
            pos_mask = gl_np == label
            other_mask = ~pos_mask
            if exclude_self:
                pos_mask[row] = False
                other_mask[row] = False
            f, a, c = _threshold_row(scores[i], pos_mask, other_mask, int(r[row]), report_depth, need_ap)
            first[row] = f
            if need_ap:
                ap_num[row], rp_num[row] = a, c
        del scores


def stream_query_stats(searcher, q: torch.Tensor, g: torch.Tensor, ql: torch.Tensor, gl: torch.Tensor, r: torch.Tensor,
                       need: torch.Tensor, report_depth: int, exclude_self: bool, map_at_r: bool, budget: int):
    """first_hit (int64), and with map_at_r ap_at_r and r_precision (float64, NaN for lone queries), on
    the CPU, for every query. need: the depth each query's first pass needs (R for MAP@R, at least the
    first-pass depth, at most the candidates); report_depth: first hits deeper than this are 0. The
    scores are in the dtype of q and g (float32, or float64 with a TorchSearcher), and so are the
    memory costs planned with."""
    n, ng = len(r), g.shape[0]
    slot_bytes, column_bytes = topk_bytes_per_slot(g.dtype), threshold_bytes_per_column(g.dtype)
    dev = ql.device
    qc, gc = _codes(ql, gl)
    lone = r <= 0
    first = torch.zeros(n, dtype=torch.long)
    ap_num = torch.zeros(n, dtype=torch.float64)
    rp_num = torch.zeros(n, dtype=torch.float64)
    need_np = need.cpu().numpy().astype(np.int64)
    active = np.flatnonzero(~lone.cpu().numpy())  # lone queries have no same-label item: nothing to search
    topk_one = need_np[active] * slot_bytes
    thr_one = ng * column_bytes
    fallback = (topk_one > budget) & (thr_one < topk_one)
    thr_rows, topk_rows = active[fallback], active[~fallback]
    if report_depth * slot_bytes <= budget:
        # a query whose need is not far below report_depth goes straight to it: a slightly deeper list
        # costs less than searching the query again when it has no hit there (In-Shop, iNat: every query)
        need_np = np.where(report_depth <= np.maximum(2 * need_np, need_np + SHALLOW_SLACK), report_depth, need_np)
    order = topk_rows[np.argsort(need_np[topk_rows], kind="stable")]
    depths = need_np[order]
    # the torch searcher's block of raw scores (at most SCORE_SHARE of the budget) lives beside the lists
    score_bytes = getattr(searcher, "chunk_rows", 0) * ng * g.element_size()
    slot_budget = max(budget // 4, budget - score_bytes)
    blocks = plan_blocks(depths, slot_budget, slot_bytes)
    if blocks:
        sizes = [e - s for s, e in blocks]
        log.debug("top-k path: %d queries in %d blocks of %d-%d rows, depth %d-%d, budget %.3g GiB",
                  len(order), len(blocks), min(sizes), max(sizes), int(depths[0]), int(depths[-1]), budget / _GIB)
    r_cpu = r.cpu()
    misses = []
    for s, e in blocks:
        rows = torch.from_numpy(order[s:e]).to(dev)
        d = int(depths[e - 1])
        _, nbr = searcher.topk(rows, d)
        rel = (nbr >= 0) & (gc[nbr.clamp_(min=0)] == qc[rows].view(-1, 1))
        del nbr
        f, a, c = _block_stats(rel, r[rows], map_at_r)
        del rel
        rows_cpu = rows.cpu()
        first[rows_cpu] = f.cpu()
        if map_at_r:
            ap_num[rows_cpu] = a.cpu()
            rp_num[rows_cpu] = c.cpu().to(torch.float64)
        if report_depth > d:
            missed = rows_cpu[(f == 0).cpu()]
            if len(missed):
                misses.append(missed)
    if misses:  # the second pass: first hits beyond the block's depth, up to report_depth
        todo = torch.cat(misses)
        per_block = slot_budget // (report_depth * slot_bytes)
        if per_block >= 1 or thr_one >= report_depth * slot_bytes:
            per_block = max(1, min(len(todo), per_block))
            log.debug("second pass (top-k): %d queries to depth %d, %d per block", len(todo), report_depth, per_block)
            for start in range(0, len(todo), per_block):
                rows = todo[start : start + per_block].to(dev)
                _, nbr = searcher.topk(rows, report_depth)
                rel = (nbr >= 0) & (gc[nbr.clamp_(min=0)] == qc[rows].view(-1, 1))
                del nbr
                first[rows.cpu()] = _block_stats(rel, r[rows], False)[0].cpu()
                del rel
        else:
            _threshold_path(q, g, ql, gl, r_cpu, todo.to(dev), exclude_self, report_depth, False, budget,
                            first, ap_num, rp_num)
    if len(thr_rows):
        _threshold_path(q, g, ql, gl, r_cpu, torch.from_numpy(thr_rows).to(dev), exclude_self, report_depth, map_at_r,
                        budget, first, ap_num, rp_num)
    out = {"first_hit": first}
    if map_at_r:
        lone_cpu = lone.cpu()
        denom = r_cpu.clamp(min=1).to(torch.float64)
        nan = torch.full((n,), float("nan"), dtype=torch.float64)
        out["ap_at_r"] = torch.where(lone_cpu, nan, ap_num / denom)
        out["r_precision"] = torch.where(lone_cpu, nan, rp_num / denom)
    return out
