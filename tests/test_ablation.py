"""The ablation study (reference-implementation §8): the variant table, the grid of configs, the paper-style table,
and the grid on synthetic data end to end through the registry."""

from __future__ import annotations

import json

import pytest


def test_variants_cover_the_losses_ablations():
    from ctxsim.losses.contextual import ABLATIONS
    from ctxsim.reference.ablation import ABLATION_VARIANTS

    assert [v.id for v in ABLATION_VARIANTS] == list(range(11))
    assert {v.id: v.name for v in ABLATION_VARIANTS} == ABLATIONS
    assert all(v.title and v.removes for v in ABLATION_VARIANTS)


def test_grid_configs():
    from ctxsim.errors import ConfigError
    from ctxsim.reference.ablation import ablation_configs, parse_variants
    from ctxsim.train import recipe

    cfgs = ablation_configs("cub", 256, seeds=2)
    assert len(cfgs) == 22
    assert [c.loss_kw["ablation"] for c in cfgs[::2]] == list(range(11))
    assert {c.seed for c in cfgs} == {0, 1}
    assert len({c.config_hash() for c in cfgs}) == 22  # every (variant, seed) is its own job
    base = recipe("cub", "hybrid", 256)
    for c in cfgs:  # only the ablation differs from the recipe
        assert {k: v for k, v in c.loss_kw.items() if k != "ablation"} == base.loss_kw
        assert c.lr == base.lr and c.model == base.model
        assert "ablation" in c.tags and f"ablation={c.loss_kw['ablation']}" in c.tags
    assert parse_variants("3,7") == [0, 3, 7]  # the default is always there: deltas need it
    assert len(ablation_configs("cub", 224, seeds=[5], variants=[2])) == 2
    with pytest.raises(ConfigError):
        parse_variants("1,11")
    with pytest.raises(ConfigError):
        parse_variants("x")
    with pytest.raises(ConfigError, match="hybrid"):
        ablation_configs("cub", 256, base=recipe("cub", "contrastive", 256))


def test_table_means_and_deltas():
    from ctxsim.reference.ablation import ablation_markdown, ablation_table

    runs = [
        {"ablation": 0, "seed": 0, "metrics": {"R@1": 0.60, "MAP@R": 0.20}},
        {"ablation": 0, "seed": 1, "metrics": {"R@1": 0.62, "MAP@R": 0.22}},
        {"ablation": 3, "seed": 0, "metrics": {"R@1": 0.55, "MAP@R": 0.18}},
        {"ablation": 8, "seed": 0, "metrics": {"R@1": 0.65}},
    ]
    rows = ablation_table(runs)
    assert [r["id"] for r in rows] == [0, 3, 8]
    d0, d3, d8 = rows
    assert d0["n"] == 2 and d0["mean"]["R@1"] == pytest.approx(61.0)
    assert d0["std"]["R@1"] == pytest.approx(1.41421356, rel=1e-6)
    assert d0["delta"]["R@1"] == pytest.approx(0.0)
    assert d3["delta"]["R@1"] == pytest.approx(-6.0) and d3["delta"]["MAP@R"] == pytest.approx(-3.0)
    assert d8["mean"]["MAP@R"] is None and d8["delta"]["MAP@R"] is None
    md = ablation_markdown(rows)
    assert md.count("\n") == 2 + 3
    assert "| 3 | No query expansion (L2) |" in md and "-6.00" in md


def test_grid_on_synthetic_end_to_end(tmp_path):
    """All eleven variants trained (2 steps each) and evaluated as registry jobs; one table row each."""
    import torch
    from typer.testing import CliRunner

    from ctxsim.cli.main import app
    from ctxsim.reference.ablation import ablation_configs, ablation_rows_from_registry
    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.runner.job import run_job_foreground
    from ctxsim.train import recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    db = tmp_path / "exp.db"
    reg = open_registry(db)
    try:
        base = recipe("synthetic", "hybrid", 256).with_overrides(epochs=1, max_steps_per_epoch=2, device="cpu",
                                                                 num_workers=0)
        cfgs = ablation_configs("synthetic", 256, base=base, seeds=1)
        assert len(cfgs) == 11
        ids = [jid for jid, created in jobs.enqueue_many(reg, cfgs, executor=jobs.FOREGROUND) if created]
        assert len(ids) == 11
        for jid in ids:
            run_job_foreground(reg, jid, device="cpu", heartbeat_s=60)
        rows = ablation_rows_from_registry(reg, dataset="synthetic")
    finally:
        reg.dispose()
        torch.set_num_threads(threads)
    assert [r["id"] for r in rows] == list(range(11))
    assert all(r["n"] == 1 and len(r["run_ids"]) == 1 for r in rows)
    assert sorted(r["run_ids"][0] for r in rows) == sorted(ids)
    for r in rows:
        assert 0.0 <= r["mean"]["R@1"] <= 100.0 and 0.0 <= r["mean"]["MAP@R"] <= 100.0
        assert r["delta"]["R@1"] == pytest.approx(r["mean"]["R@1"] - rows[0]["mean"]["R@1"])
    # the CLI view of the same grid
    res = CliRunner().invoke(app, ["ablation-table", "--dataset", "synthetic", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == list(range(11))
    res = CliRunner().invoke(app, ["ablation-table", "--dataset", "synthetic", "--db", str(db), "--format", "markdown"])
    assert res.exit_code == 0 and res.stdout.count("\n") == 2 + 11
    res = CliRunner().invoke(app, ["ablation-table", "--dataset", "synthetic", "--db", str(db)])
    assert res.exit_code == 0 and "Default" in res.stdout and "Detach" in res.stdout
    res = CliRunner().invoke(app, ["ablation-table", "--dataset", "cub", "--db", str(db)])
    assert res.exit_code == 4 and "no finished hybrid runs" in res.output


def test_sweep_ablation_preset_lists_every_variant_per_seed():
    import json as _json

    from typer.testing import CliRunner

    from ctxsim.cli.main import app

    r = CliRunner().invoke(app, ["sweep", "-d", "digits", "--ablation", "all", "--seeds", "2", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    jobs = _json.loads(r.stdout)["jobs"]
    assert len(jobs) == 11 * 2 and {j["loss"] for j in jobs} == {"hybrid"}
    assert sorted({j["set"] for j in jobs}) == sorted(f"loss.ablation={i}" for i in range(11))
    assert len({j["config_hash"] for j in jobs}) == 22
    bad = CliRunner().invoke(app, ["sweep", "-d", "digits", "-l", "contrastive", "--ablation", "all", "--dry-run"])
    assert bad.exit_code == 2 and "hybrid" in bad.output
