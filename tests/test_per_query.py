"""Per-query results (hit@1, AP@R): they average to the aggregate metrics, stay small, and every
training run stores those of its selected evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxsim.errors import DataError
from ctxsim.eval import retrieval_results
from ctxsim.eval.per_query import PER_QUERY_NAME, PerQuery, load_per_query, save_per_query


def _emb(n, dim, classes, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, dim, generator=g)
    x = centers[labels] + 1.5 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


@pytest.mark.parametrize("gallery", [False, True])
def test_means_equal_the_aggregate_metrics(gallery):
    q, ql = _emb(300, 16, 40, 0)
    g, gl = _emb(200, 16, 40, 1) if gallery else (None, None)
    ql = ql.clone()
    ql[0] = 999  # a lone query: left out of both means
    metrics, stats = retrieval_results(q, ql, g, gl, ks=(1, 4))
    pq = PerQuery.from_stats(stats, ql)
    assert pq.lone[0] and pq.hit1[0] == 0 and np.isnan(pq.ap_at_r[0])
    assert pq.r_at_1() == pytest.approx(metrics["R@1"], abs=1e-12)
    assert pq.map_at_r() == pytest.approx(metrics["MAP@R"], abs=2e-4)  # float16 per query


def test_sop_sized_file_is_under_one_megabyte(tmp_path):
    rng = np.random.default_rng(0)
    n = 60_502
    pq = PerQuery(hit1=rng.integers(0, 2, n).astype(np.uint8), ap_at_r=rng.random(n).astype(np.float16),
                  lone=np.zeros(n, dtype=bool), labels=rng.integers(0, 11_316, n).astype(np.int32), epoch=80)
    path = save_per_query(tmp_path / PER_QUERY_NAME, pq)
    assert path.stat().st_size <= 1_000_000
    back = load_per_query(path)
    assert back.epoch == 80 and np.array_equal(back.hit1, pq.hit1) and np.array_equal(back.ap_at_r, pq.ap_at_r)
    assert np.array_equal(back.labels, pq.labels) and back.r_at_1() == pq.r_at_1()


def test_bad_file_is_a_data_error(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read per-query"):
        load_per_query(bad)
    np.savez(tmp_path / "y.npz", hit1=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="lacks"):
        load_per_query(tmp_path / "y.npz")


@pytest.mark.parametrize("select", ["last", "best"])
def test_run_stores_the_selected_evaluation(tmp_path, select):
    from ctxsim.train import recipe
    from ctxsim.train.engine import fit_in_dir
    from ctxsim.train.events import ListSink

    cfg = recipe("synthetic", "hybrid", 256, profile="fixed").with_overrides(
        epochs=3, eval_every=1, max_steps_per_epoch=2, device="cpu", num_workers=0, select=select)
    sink = ListSink()
    res = fit_in_dir(cfg, tmp_path, sink=sink)
    done = next(e for e in sink.events if e.kind == "done")
    assert done.data["per_query"] == str((tmp_path / PER_QUERY_NAME).resolve())
    pq = load_per_query(done.data["per_query"])
    assert pq.epoch == res.best_epoch and len(pq) == 64
    assert pq.r_at_1() == pytest.approx(res.metrics["R@1"], abs=1e-12)
    assert pq.map_at_r() == pytest.approx(res.metrics["MAP@R"], abs=2e-4)
