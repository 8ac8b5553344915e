"""ctxsim.report.stats: the Student-t interval over seeds and the paired bootstrap (issue 13)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctxsim.report.stats import (
    bootstrap_diffs,
    interval_and_p,
    paired_bootstrap,
    seed_summary,
    t_quantile_975,
)


def test_seed_summary_is_the_student_t_interval():
    # values 70, 72, 74: mean 72, s = 2, t_{0.975,2} = 4.303, half width 4.303 * 2 / sqrt(3)
    s = seed_summary([70.0, 72.0, 74.0])
    assert (s.n, s.mean, s.std) == (3, 72.0, 2.0)
    assert s.half_width == pytest.approx(4.303 * 2 / math.sqrt(3))
    assert (s.low, s.high) == pytest.approx((72 - s.half_width, 72 + s.half_width))


def test_seed_summary_one_or_no_value():
    one = seed_summary([68.7])
    assert (one.n, one.mean, one.std, one.half_width) == (1, 68.7, None, None)
    assert seed_summary([]).n == 0 and seed_summary([]).mean is None


def test_t_quantiles_match_the_distribution():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert 2.021 > t_quantile_975(50) > 2.000  # between the table's rows
    assert t_quantile_975(10_000) == pytest.approx(1.96, abs=1e-3)
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 9, 19, 29, 45, 90, 500):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_bootstrap_over_queries_matches_the_enumerated_distribution():
    # Three queries; A hits query 0 only, B hits none. A resample's difference is K/3 where K, the
    # number of draws of query 0, is Binomial(3, 1/3): P(K=0) = 8/27, P(K=1) = 12/27,
    # P(K=2) = 6/27, P(K=3) = 1/27. Hence P(d* <= 0) = 8/27, P(d* >= 0) = 1, p = 16/27; the 2.5%
    # quantile is 0 (8/27 > 0.025) and the 97.5% quantile is 1 (P(K=3) = 1/27 > 0.025).
    a = np.array([[1.0, 0.0, 0.0]])
    b = np.zeros((1, 3))
    diffs = bootstrap_diffs(a, b, n_resamples=200_000, seed=3)
    freq = [np.mean(np.isclose(diffs, k / 3)) for k in range(4)]
    assert freq == pytest.approx([8 / 27, 12 / 27, 6 / 27, 1 / 27], abs=0.005)
    # mean and variance of the bootstrap mean: the observed mean and sigma^2/n, sigma^2 = 2/9
    assert diffs.mean() == pytest.approx(1 / 3, abs=0.005)
    assert diffs.var() == pytest.approx((2 / 9) / 3, abs=0.003)
    (r,) = paired_bootstrap({"R@1": a}, {"R@1": b}, n_resamples=200_000, seed=3)
    assert r.diff == pytest.approx(1 / 3)
    assert (r.low, r.high) == (0.0, 1.0)
    assert r.p_value == pytest.approx(16 / 27, abs=0.01)
    assert not r.seeds_resampled and r.n_queries == 3


def test_bootstrap_is_paired():
    # A and B differ by the same +0.1 on every query, with a large spread between queries: paired
    # draws give a zero-width interval at 0.1, unpaired ones would not.
    rng = np.random.default_rng(0)
    b = rng.random((1, 50))
    a = b + 0.1
    (r,) = paired_bootstrap({"MAP@R": a}, {"MAP@R": b}, n_resamples=500, seed=0)
    assert (r.low, r.diff, r.high) == pytest.approx((0.1, 0.1, 0.1))
    assert r.p_value == pytest.approx(0.0)


def test_bootstrap_over_seeds_when_both_have_several():
    # One query, two seeds each: A's seeds score 1 and 0, B's 0 and 0. Only the seed draws vary:
    # d* = mean of two draws from {1, 0} -> 0 (1/4), 1/2 (1/2), 1 (1/4).
    a = np.array([[1.0], [0.0]])
    b = np.array([[0.0], [0.0]])
    diffs = bootstrap_diffs(a, b, n_resamples=100_000, seed=1)
    freq = [np.mean(np.isclose(diffs, v)) for v in (0.0, 0.5, 1.0)]
    assert freq == pytest.approx([0.25, 0.5, 0.25], abs=0.01)
    (r,) = paired_bootstrap({"R@1": a}, {"R@1": b}, n_resamples=100_000, seed=1)
    assert r.seeds_resampled and (r.n_seeds_a, r.n_seeds_b) == (2, 2)
    assert r.diff == pytest.approx(0.5) and r.p_value == pytest.approx(0.5, abs=0.02)
    # one side with a single seed: seeds are averaged, not resampled (only one query: no spread)
    (r1,) = paired_bootstrap({"R@1": a}, {"R@1": b[:1]}, n_resamples=100, seed=1)
    assert not r1.seeds_resampled and r1.low == r1.high == pytest.approx(0.5)


def test_bootstrap_is_seeded_and_checks_shapes():
    rng = np.random.default_rng(5)
    a, b = rng.random((2, 40)), rng.random((3, 40))
    assert np.array_equal(bootstrap_diffs(a, b, 300, seed=7), bootstrap_diffs(a, b, 300, seed=7))
    assert not np.array_equal(bootstrap_diffs(a, b, 300, seed=7), bootstrap_diffs(a, b, 300, seed=8))
    # chunking does not change the draws' distribution or the mean
    assert bootstrap_diffs(a, b, 300, seed=7, chunk_cells=40).mean() == pytest.approx(
        a.mean() - b.mean(), abs=0.03)
    with pytest.raises(ValueError, match="different query sets"):
        bootstrap_diffs(a, b[:, :39])
    low, high, p = interval_and_p(np.array([-1.0, 1.0, 2.0, 3.0]))
    assert (low, high) == (-1.0, 3.0) and p == 0.5


# --- ctxsim compare --test: per-query files of finished runs -----------------------------------


def _pq(path, hits, aps, labels=None):
    from ctxsim.eval.per_query import PerQuery, save_per_query

    n = len(hits)
    lone = np.zeros(n, dtype=bool)
    lone[-1] = True  # a lone query: left out of both metrics
    return save_per_query(path, PerQuery(hit1=np.array(hits, dtype=np.uint8), ap_at_r=np.array(aps, dtype=np.float16),
                                         lone=lone, labels=np.array(labels or list(range(n)), dtype=np.int32), epoch=5))


def test_compare_test_cli(registry, tmp_path):
    import json

    from test_comparability import add_run
    from typer.testing import CliRunner

    from ctxsim.cli.main import app
    from ctxsim.train.recipes import recipe

    rng = np.random.default_rng(0)
    n = 41
    hits_a = [rng.integers(0, 2, n) for _ in range(2)]
    aps_a = [rng.random(n) for _ in range(2)]
    a_ids = [add_run(registry, recipe("cub", "hybrid", 256).with_overrides(seed=s), 0.5,
                     per_query=_pq(tmp_path / f"a{s}.npz", hits_a[s], aps_a[s])) for s in (0, 1)]
    hits_b, aps_b = np.zeros(n, dtype=int), np.full(n, 0.25)
    b_id = add_run(registry, recipe("cub", "contrastive", 256), 0.0, per_query=_pq(tmp_path / "b.npz", hits_b, aps_b))
    runner = CliRunner()
    r = runner.invoke(app, ["compare", "--test", "cub/hybrid/256", str(b_id), "--resamples", "2000",
                            "--format", "json", "--db", registry.url])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["a"]["run_ids"] == a_ids and out["b"]["run_ids"] == [b_id]
    m = {x["metric"]: x for x in out["metrics"]}
    keep = slice(0, n - 1)  # the lone last query is left out
    want_r1 = 100 * (np.mean([h[keep].mean() for h in hits_a]) - 0.0)
    assert m["R@1"]["diff"] == pytest.approx(want_r1)
    assert m["R@1"]["low"] <= m["R@1"]["diff"] <= m["R@1"]["high"] and m["R@1"]["n_queries"] == n - 1
    want_map = 100 * (np.mean([np.float16(a[keep]).astype(float).mean() for a in aps_a]) - 0.25)
    assert m["MAP@R"]["diff"] == pytest.approx(want_map, abs=1e-3)
    assert not m["R@1"]["seeds_resampled"]  # B has one seed
    text = runner.invoke(app, ["compare", "--test", str(a_ids[0]), str(b_id), "--resamples", "500",
                               "--db", registry.url]).stdout
    assert "R@1: A " in text and "95% CI [" in text and "MAP@R" in text and "40 queries" in text

    # errors: one line, exit code of the error
    other = add_run(registry, recipe("cub", "hybrid", 256).with_sets(["loss.lam=0.5"]), 0.5)
    r = runner.invoke(app, ["compare", "--test", str(other), str(b_id), "--db", registry.url])
    assert r.exit_code == 4 and "no per-query results" in r.stderr
    r = runner.invoke(app, ["compare", "--test", "cub/hybrid/256", str(b_id), "--db", registry.url])
    assert r.exit_code == 2 and "several configs" in r.stderr
    short = add_run(registry, recipe("cars", "hybrid", 256), 0.5, per_query=_pq(tmp_path / "c.npz", [1, 0, 1], [1, 0, 1]))
    r = runner.invoke(app, ["compare", "--test", str(short), str(b_id), "--db", registry.url])
    assert r.exit_code == 2 and "different query sets" in r.stderr
    r = runner.invoke(app, ["compare", "--test", "cub-hybrid", str(b_id), "--db", registry.url])
    assert r.exit_code == 2 and "neither a job id nor a group" in r.stderr
