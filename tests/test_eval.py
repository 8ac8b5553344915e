"""ctxsim.eval: metrics vs a brute-force numpy oracle, vs pytorch-metric-learning, backend agreement,
tie rule, self-exclusion by index, lone queries, bad arguments, embedding extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ctxsim.eval.knn as knn_mod
import ctxsim.eval.metrics as metrics_mod
from ctxsim.eval import evaluate_bundle, extract_embeddings, knn_search, retrieval_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["torch"] + (["faiss"] if knn_mod.faiss_available() else [])


# ---------------------------------------------------------------- oracle


def _oracle_order(s: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Candidates by descending score, ties by ascending index."""
    return cand[np.lexsort((cand, -s[cand]))]


def oracle(q, ql, g=None, gl=None, ks=(1,), lone="exclude"):
    self_mode = g is None
    if self_mode:
        g, gl = q, ql
    s_all = q.astype(np.float64) @ g.astype(np.float64).T
    hits = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(len(q)):
        cand = np.arange(len(g))
        if self_mode:
            cand = cand[cand != i]
        rel = gl[_oracle_order(s_all[i], cand)] == ql[i]
        r = int(rel.sum())
        if r == 0:
            if lone == "miss":
                for k in ks:
                    hits[k].append(0.0)
            continue
        for k in ks:
            hits[k].append(float(rel[:k].any()))
        top = rel[:r]
        prec = np.cumsum(top) / np.arange(1, r + 1)
        aps.append(float((prec * top).sum() / r))
        rps.append(float(top.sum() / r))
    out = {f"R@{k}": float(np.mean(hits[k])) if hits[k] else float("nan") for k in ks}
    out["MAP@R"] = float(np.mean(aps)) if aps else float("nan")
    out["RP"] = float(np.mean(rps)) if rps else float("nan")
    return out


def tied_data(n=90, d=5, classes=12, seed=0):
    """Small-integer embeddings (exact float32 dot products, many ties), duplicated rows, and a few
    labels that occur once (lone queries)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    x[n // 3 : n // 3 + 6] = x[:6]  # exact duplicates (labels may or may not match)
    y = rng.integers(0, classes, size=n)
    y[-3:] = [1000, 1001, 1002]  # lone in query == gallery
    return x, y


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("depth", [32, 2])
@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_self_retrieval_matches_oracle_with_ties(backend, depth, chunk_rows, monkeypatch):
    monkeypatch.setattr(metrics_mod, "FIRST_PASS_DEPTH", depth)  # depth 2 exercises the second pass
    x, y = tied_data()
    ks = (1, 2, 4, 8, 16, 50, 200)
    got = retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), ks=ks, backend=backend, chunk_rows=chunk_rows)
    _assert_same(got, oracle(x, y, ks=ks))


@pytest.mark.parametrize("backend", BACKENDS)
def test_disjoint_query_gallery_matches_oracle(backend, monkeypatch):
    monkeypatch.setattr(metrics_mod, "FIRST_PASS_DEPTH", 3)
    x, y = tied_data(n=120, seed=1)
    q, ql, g, gl = x[:50], y[:50], x[50:], y[50:]
    ks = (1, 5, 10, 20, 30)
    for lone in ("exclude", "miss"):
        got = retrieval_metrics(q, ql, g, gl, ks=ks, backend=backend, lone_queries=lone, chunk_rows=16)
        _assert_same(got, oracle(q, ql, g, gl, ks=ks, lone=lone))


def test_lone_query_modes_differ_in_recall_only():
    x, y = tied_data(seed=3)
    a = retrieval_metrics(x, y, ks=(1, 4))
    b = retrieval_metrics(x, y, ks=(1, 4), lone_queries="miss")
    assert a["MAP@R"] == b["MAP@R"] and a["RP"] == b["RP"]
    n, lone = len(y), 3
    assert b["R@4"] == pytest.approx(a["R@4"] * (n - lone) / n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_order_follows_tie_rule(backend):
    x, _ = tied_data(n=60, seed=2)
    k = 9
    vals, idx = knn_search(x, k, backend=backend, chunk_rows=11)
    s = x.astype(np.float64) @ x.astype(np.float64).T
    for i in range(len(x)):
        cand = np.delete(np.arange(len(x)), i)
        want = _oracle_order(s[i], cand)[:k]
        assert idx[i].tolist() == want.tolist()
        assert vals[i].tolist() == s[i, want].tolist()
    # disjoint, k larger than the gallery: padded with -1 / -inf
    vals, idx = knn_search(x[:5], 8, gallery=x[5:11], backend=backend)
    assert (idx[:, 6:] == -1).all() and torch.isneginf(vals[:, 6:]).all()
    assert sorted(idx[0, :6].tolist()) == list(range(6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_excluded_by_index_among_duplicates(backend):
    x = np.ones((6, 3), dtype=np.float32)  # every score ties
    y = np.array([0, 0, 1, 1, 2, 3])
    _, idx = knn_search(x, 5, backend=backend)
    for i in range(6):
        assert idx[i].tolist() == [j for j in range(6) if j != i]
    m = retrieval_metrics(x, y, ks=(1, 2, 3), backend=backend)
    # queries 0 and 1 find each other at rank 1; queries 2 and 3 see 0 and 1 first (lower indices),
    # then each other at rank 3; labels 2 and 3 are lone
    assert m["R@1"] == pytest.approx(0.5) and m["R@2"] == pytest.approx(0.5) and m["R@3"] == 1.0
    assert m["MAP@R"] == pytest.approx(0.5) and m["RP"] == pytest.approx(0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_pytorch_metric_learning(backend):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(25, 24))
    y = rng.integers(0, 25, size=400)
    y[:2] = [90, 91]  # lone queries
    x = centers[y % 25] + rng.normal(scale=1.2, size=(400, 24))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", device=torch.device("cpu"))
    ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    ours = retrieval_metrics(x, y, ks=(1,), backend=backend)
    assert ours["R@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert ours["MAP@R"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    assert ours["RP"] == pytest.approx(ref["r_precision"], abs=1e-9)
    ref = calc.get_accuracy(torch.from_numpy(x[:150]), torch.from_numpy(y[:150]), torch.from_numpy(x[150:]),
                            torch.from_numpy(y[150:]), ref_includes_query=False)
    ours = retrieval_metrics(x[:150], y[:150], x[150:], y[150:], ks=(1,), backend=backend)
    assert ours["R@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert ours["MAP@R"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)


def test_backends_agree_on_random_data():
    if len(BACKENDS) < 2:
        pytest.skip("faiss is not installed")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(700, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, 60, size=700)
    a = retrieval_metrics(x, y, ks=(1, 10, 100), backend="torch", chunk_rows=128)
    b = retrieval_metrics(x, y, ks=(1, 10, 100), backend="faiss")
    assert a == b


def test_scores_are_blocked_not_full_matrix(monkeypatch):
    seen = []
    real = knn_mod.topk_exact

    def spy(scores, k, col_offset=0):
        seen.append(tuple(scores.shape))
        return real(scores, k, col_offset)

    monkeypatch.setattr(knn_mod, "topk_exact", spy)
    x, y = tied_data(n=80)
    retrieval_metrics(x, y, ks=(1, 40), backend="torch", chunk_rows=10)
    assert seen and all(min(shape) <= 10 for shape in seen)


def test_torch_fallback_without_faiss(monkeypatch):
    monkeypatch.setattr(knn_mod, "faiss", None)
    x, y = tied_data()
    assert retrieval_metrics(x, y, ks=(1, 4))["R@4"] == oracle(x, y, ks=(4,))["R@4"]
    with pytest.raises(ValueError, match="faiss"):
        retrieval_metrics(x, y, backend="faiss")


def test_same_object_as_gallery_means_self_retrieval():
    x, y = tied_data(seed=6)
    assert retrieval_metrics(x, y, x, y) == retrieval_metrics(x, y)
    # an equal copy is a disjoint gallery: every (unit-norm) query then finds itself first
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.arange(50) // 2
    assert retrieval_metrics(x, y, x.copy(), y.copy(), ks=(1,))["R@1"] == 1.0


def test_all_lone_gives_nan():
    m = retrieval_metrics(np.eye(4, dtype=np.float32), np.arange(4), ks=(1,))
    assert all(np.isnan(v) for v in m.values())


@pytest.mark.parametrize("call, match", [
    (lambda x, y: retrieval_metrics(x[0], y), "2-D"),
    (lambda x, y: retrieval_metrics(x, y[:-1]), "length"),
    (lambda x, y: retrieval_metrics(x, y, x[:, :3], y), "dimensions differ"),
    (lambda x, y: retrieval_metrics(x, y, x.copy()), "g_labels"),
    (lambda x, y: retrieval_metrics(x, y, ks=(0,)), "positive"),
    (lambda x, y: retrieval_metrics(x, y, ks=(), map_at_r=False), "nothing"),
    (lambda x, y: retrieval_metrics(x, y, backend="annoy"), "backend"),
    (lambda x, y: retrieval_metrics(x, y, lone_queries="drop"), "lone_queries"),
    (lambda x, y: retrieval_metrics(x, y + 0.5), "integers"),
    (lambda x, y: retrieval_metrics(np.where(x > 0, np.nan, x), y), "NaN"),
    (lambda x, y: retrieval_metrics(x[:1], y[:1]), "at least 2"),
    (lambda x, y: knn_search(x, 0), "positive int"),
])
def test_bad_arguments(call, match):
    x, y = tied_data(n=20)
    with pytest.raises(ValueError, match=match):
        call(x, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = tied_data(n=300, seed=4)
    cpu = retrieval_metrics(x, y, ks=(1, 8, 64))
    gpu = retrieval_metrics(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), ks=(1, 8, 64))
    assert cpu == gpu
    if knn_mod.faiss_gpu_available():
        assert retrieval_metrics(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), ks=(1, 8, 64),
                                 backend="faiss") == cpu


def test_extract_embeddings_progress_and_mode():
    from torch.utils.data import DataLoader, TensorDataset

    from ctxsim.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", embedding_size=8, in_channels=1)
    model.train()
    images = torch.randn(10, 1, 8, 8)
    labels = torch.arange(10) % 3
    calls = []
    emb, lab = extract_embeddings(model, DataLoader(TensorDataset(images, labels), batch_size=4),
                                  progress=lambda done, total: calls.append((done, total)), amp=True)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert emb.shape == (10, 8) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.equal(lab, labels)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(emb, model(images))
    with pytest.raises(ValueError, match="no batches"):
        extract_embeddings(model, [])
    with pytest.raises(ValueError, match="images"):
        extract_embeddings(model, [(images[:2], labels[:3])])


def test_evaluate_bundle_self_and_disjoint():
    from types import SimpleNamespace

    from torch.utils.data import TensorDataset

    from ctxsim.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", embedding_size=8, in_channels=1).eval()
    images, labels = torch.randn(12, 1, 8, 8), torch.arange(12) % 4
    with torch.no_grad():
        emb = model(images)
    calls = []
    same = SimpleNamespace(query=TensorDataset(images, labels), gallery=None, ks=(1, 2))
    got = evaluate_bundle(model, same, batch_size=5, progress=lambda d, t: calls.append((d, t)))
    assert got == pytest.approx(retrieval_metrics(emb, labels, ks=(1, 2)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    split = SimpleNamespace(query=TensorDataset(images[:5], labels[:5]),
                            gallery=TensorDataset(images[5:], labels[5:]), ks=(1, 4))
    got = evaluate_bundle(model, split, batch_size=4, ks=(1, 3))
    assert got == pytest.approx(retrieval_metrics(emb[:5], labels[:5], emb[5:], labels[5:], ks=(1, 3)))


def test_auto_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert knn_mod.resolve_backend("auto", cpu, 512) == ("faiss" if knn_mod.faiss_available() else "torch")
    assert knn_mod.resolve_backend("auto", torch.device("cuda"), 512) == "torch"
    assert knn_mod.resolve_backend("torch", cpu, 512) == "torch"
    monkeypatch.setattr(knn_mod, "faiss", None)
    assert knn_mod.resolve_backend("auto", cpu, 512) == "torch"
