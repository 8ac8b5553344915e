"""Streaming query_stats (ctxsim.eval.streaming): the blocked computation within a memory budget gives
today's per-query results (first_hit, R, lone, AP@R, RP) on both backends, for any block size, down
to blocks of one query and the threshold fallback for classes larger than the budget allows; query
== gallery and disjoint query/gallery (In-Shop) sets, lone queries, exact ties; the budget from the
argument or $CTXSIM_EVAL_MEMORY_GB; and the peak memory of a call stays near the budget."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ctxsim.eval.knn as knn_mod
import ctxsim.eval.streaming as streaming
from ctxsim.eval import PerQuery, query_stats, retrieval_metrics, retrieval_results
from ctxsim.eval.metrics import _as_labels, relevant_counts

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["torch"] + (["faiss"] if knn_mod.faiss_available() else [])
_GIB = 2**30


# ---------------------------------------------------------------- today's algorithm, the reference


def reference_stats(q_emb, q_labels, g_emb=None, g_labels=None, max_k=1, map_at_r=True, backend="torch"):
    """ctxsim's query_stats before streaming (commit f29ec1a), unchanged but for the argument checks:
    one first pass of depth max(R) for every query, n x depth float64 tensors for AP@R."""
    q = knn_mod._as_matrix(q_emb, "query")
    self_mode = g_emb is None
    if self_mode:
        g, ql = q, _as_labels(q_labels, q.shape[0], "query", q.device)
        gl = ql
    else:
        g = knn_mod._as_matrix(g_emb, "gallery")
        ql = _as_labels(q_labels, q.shape[0], "query", q.device)
        gl = _as_labels(g_labels, g.shape[0], "gallery", q.device)
    n_cand = g.shape[0] - (1 if self_mode else 0)
    r = relevant_counts(ql, gl, self_mode)
    lone = r <= 0
    r_max = int(r.max()) if len(r) else 0
    depth = min(n_cand, max(r_max if map_at_r else 0, min(max_k, 32), 1))
    searcher = knn_mod.make_searcher(q, g, self_mode, backend)
    _, nbr = searcher.topk_all(depth)
    rel = (nbr >= 0) & (gl[nbr.clamp(min=0)] == ql.view(-1, 1))
    has = rel.any(1)
    first = torch.where(has, rel.to(torch.int8).argmax(1) + 1, torch.zeros_like(r))
    deep = min(max_k, n_cand)
    if deep > depth:
        todo = (~has & ~lone).nonzero().squeeze(1)
        if len(todo):
            _, nbr2 = searcher.topk(todo, deep)
            rel2 = (nbr2 >= 0) & (gl[nbr2.clamp(min=0)] == ql[todo].view(-1, 1))
            first[todo] = torch.where(rel2.any(1), rel2.to(torch.int8).argmax(1) + 1, torch.zeros_like(todo))
    out = {"first_hit": first.cpu(), "R": r.cpu(), "lone": lone.cpu()}
    if map_at_r:
        rd = rel.to(torch.float64)
        ranks = torch.arange(1, depth + 1, device=rd.device, dtype=torch.float64)
        within = ranks.view(1, -1) <= r.view(-1, 1)
        hits = rd * within
        denom = r.clamp(min=1).to(torch.float64)
        ap = (hits * hits.cumsum(1) / ranks).sum(1) / denom
        rp = hits.sum(1) / denom
        nan = torch.full_like(ap, float("nan"))
        out["ap_at_r"] = torch.where(lone, nan, ap).cpu()
        out["r_precision"] = torch.where(lone, nan, rp).cpu()
    return out


def full_ap_oracle(q, ql, g=None, gl=None):
    """Average precision over the whole ranking, float64 scores, one query at a time (NaN when lone)."""
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    out = []
    for i in range(len(q)):
        s = g.astype(np.float64) @ q[i].astype(np.float64)
        cand = np.arange(len(g))
        if self_mode:
            cand = cand[cand != i]
        rel = gl[cand[np.lexsort((cand, -s[cand]))]] == ql[i]
        if not rel.any():
            out.append(np.nan)
            continue
        ranks = np.flatnonzero(rel) + 1
        out.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return np.array(out)


def assert_same_stats(got: dict, want: dict, tol: float = 1e-12):
    assert set(want) <= set(got)
    for key in ("first_hit", "R", "lone"):
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), (key, (got[key] != want[key]).nonzero()[:5].tolist())
    for key in ("ap_at_r", "r_precision"):
        if key in want:
            assert got[key].dtype == want[key].dtype == torch.float64
            assert torch.equal(got[key].isnan(), want[key].isnan()), key
            assert torch.allclose(got[key], want[key], atol=tol, rtol=0, equal_nan=True), key


# ---------------------------------------------------------------- data


def tied_data(n=150, d=4, seed=0, big=0, lone=3):
    """Small-integer embeddings: exact float32 dot products on any kernel, so both backends and every
    block size see the same scores, with many exact ties; duplicated rows; `big` items in one class
    (label 0); the last `lone` labels occur once."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[n // 3 : n // 3 + 8] = x[:8]  # exact duplicates
    y = rng.integers(1, max(2, n // 6), size=n)
    if big:
        y[rng.choice(n - lone, size=big, replace=False)] = 0
    if lone:
        y[-lone:] = 10_000 + np.arange(lone)
    return x, y


def budget_for(nbytes: int) -> float:
    return nbytes / _GIB


# ---------------------------------------------------------------- equality with today's algorithm


# budgets in bytes: None (the default: one block), a few blocks, blocks of one query (the deepest query
# alone just fits), and too small for the big class (its queries take the threshold path)
BUDGETS = {"default": None, "few_blocks": 60 * 40 * streaming.TOPK_BYTES_PER_SLOT,
           "one_query": 64 * streaming.TOPK_BYTES_PER_SLOT, "fallback": 40 * streaming.TOPK_BYTES_PER_SLOT}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("ks", [(1, 2, 4, 8), (1, 500)])
def test_self_retrieval_equals_todays_algorithm(backend, budget, ks, caplog):
    x, y = tied_data(big=65)  # R = 64 for the big class, about 5 elsewhere
    mem = None if BUDGETS[budget] is None else budget_for(BUDGETS[budget])
    with caplog.at_level(logging.DEBUG, logger="ctxsim.eval.streaming"):
        got = query_stats(x, y, max_k=max(ks), backend=backend, memory_gb=mem)
    want = reference_stats(x, y, max_k=max(ks), backend=backend)
    assert_same_stats(got, want)
    log = caplog.text
    assert "top-k path" in log
    if budget == "one_query":
        assert "blocks of 1-" in log and "threshold path" not in log  # the deepest queries one by one
    if budget == "fallback":  # 64 slots do not fit; 149 gallery columns of score row do
        assert "threshold path: 65 queries" in log
    if budget == "default":
        assert "in 1 blocks" in log
    if max(ks) == 500:  # the second pass goes to all 149 candidates: lists where they fit, else score rows
        assert ("second pass (top-k)" if budget in ("default", "few_blocks") else "second pass (threshold)") in log


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("slack", [streaming.SHALLOW_SLACK, 0])
def test_inshop_shape_equals_todays_algorithm(backend, budget, slack, caplog, monkeypatch):
    """Disjoint query and gallery sets; some query labels are absent from the gallery (lone), one
    class is larger than a block; slack 0: shallow queries are not sent deeper at once, so those
    without a hit take the second pass."""
    monkeypatch.setattr(streaming, "SHALLOW_SLACK", slack)
    x, y = tied_data(n=260, seed=1, big=90, lone=0)
    q, ql, g, gl = x[:120], y[:120].copy(), x[120:], y[120:]
    ql[:4] = [20_000, 20_001, 20_001, 20_002]  # lone: not in the gallery
    mem = None if BUDGETS[budget] is None else budget_for(BUDGETS[budget])
    for max_k, map_at_r in ((8, True), (100, True), (30, False)):
        with caplog.at_level(logging.DEBUG, logger="ctxsim.eval.streaming"):
            got = query_stats(q, ql, g, gl, max_k=max_k, map_at_r=map_at_r, backend=backend, memory_gb=mem)
        want = reference_stats(q, ql, g, gl, max_k=max_k, map_at_r=map_at_r, backend=backend)
        assert_same_stats(got, want)
        assert bool(got["lone"][:4].all()) and (got["first_hit"][:4] == 0).all()
    if budget == "fallback":
        assert "threshold path" in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_floats_equal_todays_algorithm(backend):
    """Unit-norm float data (no exact ties), a long-tailed class-size mix, several budgets."""
    rng = np.random.default_rng(7)
    sizes = np.maximum(1, (120 / np.arange(1, 40) ** 1.1).astype(int))
    y = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    centres = rng.normal(size=(len(sizes), 24))
    x = centres[y] + 1.3 * rng.normal(size=(len(y), 24))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    want = reference_stats(x, y, max_k=16, backend=backend)
    for nbytes in (None, 2_000 * streaming.TOPK_BYTES_PER_SLOT, 130 * streaming.TOPK_BYTES_PER_SLOT,
                   30 * streaming.TOPK_BYTES_PER_SLOT):
        mem = None if nbytes is None else budget_for(nbytes)
        assert_same_stats(query_stats(x, y, max_k=16, backend=backend, memory_gb=mem), want, tol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_duplicates_and_lone(backend):
    """Every score ties: the order is by index; lone queries get first_hit 0 and NaN."""
    x = np.ones((12, 3), dtype=np.float32)
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4])
    for nbytes in (None, 6 * streaming.TOPK_BYTES_PER_SLOT, 2 * streaming.TOPK_BYTES_PER_SLOT):
        mem = None if nbytes is None else budget_for(nbytes)
        for max_k in (4, 10):  # label 1 first appears at rank 8: reported to depth max(max R, max K) only
            got = query_stats(x, y, max_k=max_k, backend=backend, memory_gb=mem)
            assert_same_stats(got, reference_stats(x, y, max_k=max_k, backend=backend))
            assert got["first_hit"].tolist() == [1] * 7 + ([8, 8] if max_k == 10 else [0, 0]) + [0, 0, 0]
            assert torch.isnan(got["ap_at_r"][-3:]).all() and got["lone"][-3:].all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_per_query_and_full_map_unchanged(backend):
    x, y = tied_data(n=120, seed=3, big=40)
    ks = (1, 2, 4, 8)
    ref = reference_stats(x, y, max_k=8, backend=backend)
    for mem in (None, budget_for(30 * streaming.TOPK_BYTES_PER_SLOT)):
        metrics, st = retrieval_results(x, y, ks=ks, backend=backend, full_map=True, memory_gb=mem)
        assert set(metrics) == {"R@1", "R@2", "R@4", "R@8", "MAP@R", "RP", "mAP"}
        keep = ~ref["lone"]
        assert metrics["MAP@R"] == pytest.approx(float(ref["ap_at_r"][keep].mean()), abs=1e-12)
        assert metrics["R@1"] == float((ref["first_hit"][keep] == 1).to(torch.float64).mean())
        np.testing.assert_allclose(st["ap"].numpy(), full_ap_oracle(x, y), atol=1e-12)
        a, b = PerQuery.from_stats(st, y), PerQuery.from_stats(ref, y)
        for key in ("hit1", "ap_at_r", "lone", "labels"):
            got, want = getattr(a, key), getattr(b, key)
            assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=key == "ap_at_r"), key


# ---------------------------------------------------------------- the budget


def test_budget_from_argument_environment_and_default(monkeypatch):
    monkeypatch.delenv(streaming.MEMORY_ENV, raising=False)
    assert streaming.resolve_memory_gb() == streaming.DEFAULT_MEMORY_GB == 2.0
    assert streaming.resolve_memory_gb(0.5) == 0.5
    monkeypatch.setenv(streaming.MEMORY_ENV, "0.25")
    assert streaming.resolve_memory_gb() == 0.25
    assert streaming.resolve_memory_gb(3) == 3.0  # the argument wins
    assert streaming.budget_bytes() == _GIB // 4
    for bad in ("lots", "0", "-1", "nan", "inf"):
        monkeypatch.setenv(streaming.MEMORY_ENV, bad)
        with pytest.raises(ValueError, match="CTXSIM_EVAL_MEMORY_GB must be a positive number"):
            streaming.resolve_memory_gb()
    monkeypatch.setenv(streaming.MEMORY_ENV, "lots")
    x, y = tied_data(n=20)
    with pytest.raises(ValueError, match="CTXSIM_EVAL_MEMORY_GB"):
        retrieval_metrics(x, y)
    monkeypatch.delenv(streaming.MEMORY_ENV)
    for bad in (0, -2.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="memory_gb must be a positive number"):
            retrieval_metrics(x, y, memory_gb=bad)


def test_environment_budget_is_used(monkeypatch, caplog):
    x, y = tied_data(big=65)
    monkeypatch.setenv(streaming.MEMORY_ENV, str(budget_for(40 * streaming.TOPK_BYTES_PER_SLOT)))
    with caplog.at_level(logging.DEBUG, logger="ctxsim.eval.streaming"):
        got = query_stats(x, y, max_k=4, backend="torch")
    assert "threshold path: 65 queries" in caplog.text
    assert_same_stats(got, reference_stats(x, y, max_k=4))


def test_plan_blocks():
    depths = np.array([1, 2, 2, 5, 5, 5, 9, 40])
    blocks = streaming.plan_blocks(depths, budget=20, bytes_per_slot=1)
    assert blocks == [(0, 4), (4, 6), (6, 7), (7, 8)]  # 4 x 5, 2 x 5, 1 x 9, 1 x 40 (one query may exceed it)
    assert streaming.plan_blocks(depths, budget=10**9, bytes_per_slot=1) == [(0, 8)]
    assert streaming.plan_blocks(np.array([], dtype=np.int64), 10) == []


# ---------------------------------------------------------------- peak memory

_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from ctxsim.eval import retrieval_metrics

    def status_mb(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024

    torch.set_num_threads(1)
    n, big, dim = 16_000, 2_400, 32
    rng = np.random.default_rng(0)
    y = np.concatenate([np.zeros(big, np.int64), 1 + np.arange(n - big) // 5])  # one class of 2,400, the rest of 5
    rng.shuffle(y)
    centres = rng.normal(size=(int(y.max()) + 1, dim)).astype(np.float32)
    x = centres[y] + rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = {}
    for backend in sys.argv[1:]:
        retrieval_metrics(x[:300], y[:300], backend=backend, memory_gb=0.1)  # warm up lazy allocations
        base = status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        m = retrieval_metrics(x, y, ks=(1, 4), backend=backend, memory_gb=0.1)
        out[backend] = {"delta_mb": status_mb("VmHWM") - base, "map": m["MAP@R"]}
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_peak_memory_stays_near_the_budget():
    """16,000 queries whose largest class has 2,400 items: today's algorithm held 16,000 x 2,399
    neighbour slots (38M) as int64 indices, float32 scores and at least four float64 tensors, over
    1.6 GB; with a 0.1 GiB budget the call's peak RSS (VmHWM reset after the data is made, in a fresh
    process) grows by well under 0.4 GB (measured about 0.11-0.13 GB)."""
    n, depth = 16_000, 2_399
    old_bytes = n * depth * (8 + 4 + 4 * 8)
    assert old_bytes > 1.5e9
    root = Path(__file__).resolve().parents[1]  # this checkout's ctxsim, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, *BACKENDS], capture_output=True, text=True,
                          timeout=120, check=False, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for backend, row in out.items():
        assert 0 < row["map"] < 1
        assert row["delta_mb"] * 2**20 < 0.4e9, (backend, row)
        assert row["delta_mb"] * 2**20 < old_bytes / 4, (backend, row)


# ---------------------------------------------------------------- precision="float64"


def near_tie_data(n=200, seed=0, big=0):
    """float32 embeddings (a, b, c) whose scores are float32 near-ties: a in {1, 7/8, ..., 1/2} and b in
    {0, 1/4, 1/2} give exact level products a_i a_j + b_i b_j >= 1/4, and c = k * 2**-20 with |k| <= 60
    adds at most 2**-28.2, less than half a float32 ulp at 1/4. So float32 scores (any kernel, any
    summation order) are the level products exactly and tie within a level (the tie rule then orders by
    index), while float64 scores are exact (42 significant bits) and order those items by c_i c_j.
    `big` items share label 0; the rest have 12 labels."""
    rng = np.random.default_rng(seed)
    a = rng.choice([1.0, 0.875, 0.75, 0.625, 0.5], n)
    b = rng.choice([0.0, 0.25, 0.5], n)
    c = rng.integers(-60, 61, n) * 2.0**-20
    x = np.stack([a, b, c], 1).astype(np.float32)
    y = rng.integers(1, 13, n)
    if big:
        y[rng.choice(n, size=big, replace=False)] = 0
    return x, y


def float64_reference(q, ql, g=None, gl=None, max_k=1, map_at_r=True):
    """first_hit, AP@R and RP (with map_at_r) from float64 scores computed one query at a time (numpy),
    ranked by score descending then index ascending; first_hit reported to query_stats' depth (0 beyond)."""
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    g64 = g.astype(np.float64)
    n_cand = len(g) - (1 if self_mode else 0)
    counts = {lab: int((gl == lab).sum()) - (1 if self_mode else 0) for lab in np.unique(ql)}
    r_all = np.array([counts[lab] for lab in ql])
    report = max(min(n_cand, max(int(r_all.max()) if map_at_r else 0, min(max_k, 32), 1)), min(max_k, n_cand))
    first, ap, rp = [], [], []
    for i in range(len(q)):
        s = g64 @ q[i].astype(np.float64)
        cand = np.arange(len(g))
        if self_mode:
            cand = cand[cand != i]
        rel = gl[cand[np.lexsort((cand, -s[cand]))]] == ql[i]
        r = int(r_all[i])
        hit = int(np.argmax(rel)) + 1 if rel.any() else 0
        first.append(hit if hit <= report else 0)
        if r <= 0:
            ap.append(np.nan)
            rp.append(np.nan)
            continue
        top = rel[:r]
        ap.append(float((np.cumsum(top) / np.arange(1, r + 1) * top).sum() / r))
        rp.append(float(top.sum() / r))
    out = {"first_hit": torch.tensor(first, dtype=torch.long), "R": torch.from_numpy(r_all).long(),
           "lone": torch.from_numpy(r_all <= 0)}
    if map_at_r:
        out.update(ap_at_r=torch.tensor(ap, dtype=torch.float64), r_precision=torch.tensor(rp, dtype=torch.float64))
    return out


def count_ap_differences(got: dict, want: dict, tol: float = 1e-6) -> int:
    a, b = got["ap_at_r"], want["ap_at_r"]
    keep = ~want["lone"]
    return int(((a[keep] - b[keep]).abs() > tol).sum())


def test_near_tie_data_separates_float32_from_float64():
    """The data the float64 tests use: its float32 scores are its level products exactly (ties), its
    float64 scores are not, and the float32 path differs from the float64 reference on many queries
    (so the float64 tests below cannot pass on float32 rankings)."""
    x, y = near_tie_data(big=120)
    x64 = x.astype(np.float64)
    levels = x64[:, :2] @ x64[:, :2].T
    s32 = (torch.from_numpy(x) @ torch.from_numpy(x).T).numpy().astype(np.float64)
    assert np.array_equal(s32, levels)
    s64 = x64 @ x64.T
    assert (s64 != levels).mean() > 0.9  # c = 0 for a few items: exact ties in float64 too
    want = float64_reference(x, y, max_k=4)
    for backend in BACKENDS:
        got32 = query_stats(x, y, max_k=4, backend=backend)
        assert count_ap_differences(got32, want) > 50, backend
        assert float((got32["ap_at_r"] - want["ap_at_r"]).nan_to_num().abs().max()) > 1e-3


# budgets in bytes for the float64 path on near_tie_data(big=120): R = 119 for label 0, about 6 otherwise;
# blocks of one (the deepest query alone fits), and too small for the big class (119 slots of 112 bytes do
# not fit, its score row of 199 columns of 48 bytes does: the threshold path)
BUDGETS64 = {"default": None, "few_blocks": 40 * 60 * streaming.TOPK_BYTES_PER_SLOT_FLOAT64,
             "one_query": 119 * streaming.TOPK_BYTES_PER_SLOT_FLOAT64, "fallback": 100 * streaming.TOPK_BYTES_PER_SLOT_FLOAT64}


@pytest.mark.parametrize("budget", list(BUDGETS64))
@pytest.mark.parametrize("max_k", [4, 500])
def test_float64_equals_a_float64_one_query_reference(budget, max_k, caplog):
    """precision="float64": first_hit, AP@R and RP equal the float64 one-query-at-a-time reference on
    near-tied data at any budget (one block, several, blocks of one query, the threshold path for the
    big class; max_k=500: the second pass to all 199 candidates, on lists or on score rows), where the
    float32 path differs."""
    x, y = near_tie_data(big=120)
    mem = None if BUDGETS64[budget] is None else budget_for(BUDGETS64[budget])
    want = float64_reference(x, y, max_k=max_k)
    with caplog.at_level(logging.DEBUG, logger="ctxsim.eval"):
        got = query_stats(x, y, max_k=max_k, memory_gb=mem, precision="float64")
    assert_same_stats(got, want)
    got32 = query_stats(x, y, max_k=max_k, backend="torch", memory_gb=mem)
    assert count_ap_differences(got32, want) > 50  # not vacuous: float32 ranks these near-ties by index
    log = caplog.text
    assert "precision float64: float64 scores from torch matmul" in log
    if budget == "one_query":
        assert "blocks of 1-" in log and "threshold path" not in log
    if budget == "fallback":
        assert "threshold path: 120 queries" in log
        if max_k == 500:
            assert "second pass (threshold)" in log
    if budget == "default":
        assert "in 1 blocks" in log


@pytest.mark.parametrize("budget", ["default", "one_query", "fallback"])
def test_float64_disjoint_query_and_gallery(budget, caplog):
    """In-Shop shape (disjoint sets, some lone queries) in float64: equal to the float64 reference."""
    x, y = near_tie_data(n=320, seed=1, big=170)
    q, ql, g, gl = x[:120], y[:120].copy(), x[120:], y[120:]
    ql[:3] = [20_000, 20_001, 20_001]  # lone
    # R = 113 for label 0: 113 slots (blocks of one query at the deepest), or not even that (score rows)
    nbytes = {"default": None, "one_query": 113 * streaming.TOPK_BYTES_PER_SLOT_FLOAT64,
              "fallback": 100 * streaming.TOPK_BYTES_PER_SLOT_FLOAT64}[budget]
    mem = None if nbytes is None else budget_for(nbytes)
    for max_k, map_at_r in ((8, True), (300, True), (30, False)):
        want = float64_reference(q, ql, g, gl, max_k=max_k, map_at_r=map_at_r)
        with caplog.at_level(logging.DEBUG, logger="ctxsim.eval.streaming"):
            got = query_stats(q, ql, g, gl, max_k=max_k, map_at_r=map_at_r, memory_gb=mem, precision="float64")
        assert_same_stats(got, want)
        if map_at_r:
            assert count_ap_differences(query_stats(q, ql, g, gl, max_k=max_k, backend="torch", memory_gb=mem), want) > 10
    if budget == "one_query":
        assert "blocks of 1-" in caplog.text and "threshold path" not in caplog.text
    if budget == "fallback":
        assert "threshold path: " in caplog.text


def test_float64_threshold_path_alone(caplog):
    """Every query of the big class on the threshold path, rows one block at a time, in float64; the
    same budget in float32 gives float32's (different) answers there."""
    x, y = near_tie_data(big=120)
    # one score row of 200 float64 columns fits, two do not: blocks of one row
    mem = budget_for(200 * streaming.THRESHOLD_BYTES_PER_COLUMN_FLOAT64 + 1)
    want = float64_reference(x, y, max_k=1)
    with caplog.at_level(logging.DEBUG, logger="ctxsim.eval.streaming"):
        got = query_stats(x, y, max_k=1, memory_gb=mem, precision="float64")
    assert "threshold path: 120 queries, 1 score rows per block (200 gallery columns)" in caplog.text
    assert "second pass (threshold)" in caplog.text  # first hits beyond R, up to depth 119, counted on score rows
    assert_same_stats(got, want)
    big = torch.from_numpy(y == 0)
    got32 = query_stats(x, y, max_k=1, backend="torch", memory_gb=mem)
    assert count_ap_differences({"ap_at_r": got32["ap_at_r"][big]}, {"ap_at_r": want["ap_at_r"][big], "lone": want["lone"][big]}) > 50


def test_float64_metrics_and_full_map():
    """retrieval_metrics / retrieval_results pass precision through: MAP@R and mAP over the whole ranking
    equal the float64 references; float32 gives different values on these near-ties."""
    x, y = near_tie_data(n=150, seed=2, big=40)
    want = float64_reference(x, y, max_k=8)
    keep = ~want["lone"]
    metrics, st = retrieval_results(x, y, ks=(1, 8), full_map=True, precision="float64")
    assert metrics == retrieval_metrics(x, y, ks=(1, 8), full_map=True, precision="float64")
    assert metrics["MAP@R"] == pytest.approx(float(want["ap_at_r"][keep].mean()), abs=1e-12)
    assert metrics["R@1"] == float((want["first_hit"][keep] == 1).to(torch.float64).mean())
    np.testing.assert_allclose(st["ap"].numpy(), full_ap_oracle(x, y), atol=1e-12)
    m32 = retrieval_metrics(x, y, ks=(1, 8), full_map=True, backend="torch")
    assert abs(m32["MAP@R"] - metrics["MAP@R"]) > 1e-4 and abs(m32["mAP"] - metrics["mAP"]) > 1e-4


def test_float64_keeps_float64_input_and_halves_the_score_block(monkeypatch):
    """float64 input is scored as given (not rounded to float32 first); backend="auto" never builds a
    faiss index in float64; the torch searcher's score block holds half the rows of a float32 one."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    y = rng.integers(0, 5, 40)
    x[1] = x[0] + 1e-12  # a float64 near-tie that float32 input would erase
    want = float64_reference(x, y, max_k=4)

    def no_faiss(*a, **kw):
        raise AssertionError("faiss used with precision='float64'")

    monkeypatch.setattr("ctxsim.eval.metrics.FaissSearcher", no_faiss)
    assert_same_stats(query_stats(x, y, max_k=4, backend="auto", precision="float64"), want)
    g32, g64 = torch.zeros(1000, 4), torch.zeros(1000, 4, dtype=torch.float64)
    assert knn_mod.TorchSearcher(g32, g32, True, chunk_bytes=400_000).chunk_rows == 100
    assert knn_mod.TorchSearcher(g64, g64, True, chunk_bytes=400_000).chunk_rows == 50


def test_bad_precision_is_a_clear_error():
    x, y = near_tie_data(n=30)
    for bad in ("float16", "double", "FLOAT64", None, torch.float64, 64):
        with pytest.raises(ValueError, match="precision must be one of 'float32', 'float64', got"):
            retrieval_metrics(x, y, precision=bad)
        with pytest.raises(ValueError, match="precision must be one of"):
            query_stats(x, y, precision=bad)
    with pytest.raises(ValueError, match="precision='float64' needs backend='torch' or 'auto'"):
        retrieval_metrics(x, y, backend="faiss", precision="float64")
    with pytest.raises(ValueError, match="unknown k-NN backend"):
        retrieval_metrics(x, y, backend="numpy", precision="float64")
