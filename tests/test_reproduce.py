"""`ctxsim reproduce` queues exactly the missing cells of a paper table, once; `ctxsim compare
--table` lays the table out with the published number and ours per cell (issue 13)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from test_comparability import add_run, reference_fingerprint
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.errors import ConfigError
from ctxsim.registry.models import Job
from ctxsim.report.reproduce import TABLES, plan, reproduce
from ctxsim.report.table import table_data, table_markdown
from ctxsim.train.configure import configure
from ctxsim.train.recipes import recipe


def _jobs(reg):
    with reg.Session() as s:
        return [(j.dataset, j.loss, j.resolution, j.seed, j.status) for j in s.scalars(select(Job).order_by(Job.id))]


def test_reproduce_queues_exactly_the_missing_cells_once(registry):
    fp = reference_fingerprint("cub")
    # cub/hybrid: seeds 0 and 1 finished (comparable), seed 2 failed: one run missing (a new seed)
    add_run(registry, recipe("cub", "hybrid", 224), 0.71, fingerprint=fp)
    add_run(registry, recipe("cub", "hybrid", 224).with_overrides(seed=1), 0.72, fingerprint=fp)
    add_run(registry, recipe("cub", "hybrid", 224).with_overrides(seed=2), 0.0, fingerprint=fp, status="failed")
    # cub/triplet: three pending runs of the recipe (queued, so no fingerprint yet): complete
    for seed in (0, 1, 2):
        add_run(registry, recipe("cub", "triplet", 224).with_overrides(seed=seed), 0.0, status="queued")
    # cars/hybrid: a tiny run does not count for its cell; nor does a fixed-profile one
    add_run(registry, configure("cars", "hybrid", 224, sets=["model.arch=tiny"]), 0.5,
            fingerprint=reference_fingerprint("cars"))
    add_run(registry, configure("cars", "hybrid", 224, profile="fixed"), 0.9, fingerprint=reference_fingerprint("cars"))
    before = len(_jobs(registry))

    dry, dry_u = reproduce(registry, 224, datasets=["cub", "Cars196"], losses=["hybrid", "triplet"], seeds=3, dry_run=True)
    assert [(u.dataset, u.existing, u.queued) for u in dry_u] == [("cub", None, None), ("cars", None, None)]
    assert {(p.dataset, p.loss): p.new_seeds for p in dry} == {
        ("cub", "triplet"): [], ("cub", "hybrid"): [2], ("cars", "triplet"): [0, 1, 2], ("cars", "hybrid"): [0, 1, 2]}
    assert len(_jobs(registry)) == before  # a dry run queues nothing

    plans, untrained = reproduce(registry, 224, datasets=["cub", "cars"], losses=["hybrid", "triplet"], seeds=3, root="/data")
    new = _jobs(registry)[before:]
    # with the table: one untrained baseline per dataset (epoch 0, seed 0), an `untrained` job
    assert sorted(new) == sorted([("cub", "hybrid", 224, 2, "queued")]
                                 + [("cars", loss, 224, s, "queued") for loss in ("hybrid", "triplet") for s in (0, 1, 2)]
                                 + [(d, "hybrid", 224, 0, "queued") for d in ("cub", "cars")])
    assert [u.dataset for u in untrained] == ["cub", "cars"] and all(u.queued for u in untrained)
    with registry.Session() as s:
        u_cfgs = [json.loads(c) for c in s.scalars(select(Job.config_json).where(Job.id.in_([u.queued for u in untrained])))]
    assert [(c["kind"], c["epochs"], c["config"]["seed"], c["config"]["root"]) for c in u_cfgs] == [("untrained", 0, 0, "/data")] * 2
    assert sum(len(p.queued) for p in plans) == 7
    new_ids = [j for p in plans for j in p.queued]
    with registry.Session() as s:  # the recipes under the reference profile, with the data root
        cfgs = [json.loads(c) for c in s.scalars(select(Job.config_json).where(Job.id.in_(new_ids)))]
    assert all(c["profile"] == "reference" and c["root"] == "/data" for c in cfgs) and len(cfgs) == 7

    again, again_u = reproduce(registry, 224, datasets=["cub", "cars"], losses=["hybrid", "triplet"], seeds=3, root="/data")
    assert all(not p.new_seeds and not p.queued for p in again)  # idempotent
    assert [u.existing for u in again_u] == [u.queued for u in untrained] and not any(u.queued for u in again_u)
    assert len(_jobs(registry)) == before + 9


def test_reproduce_narrows_and_refuses_what_the_table_lacks(registry):
    cells = {(p.dataset, p.loss) for p in plan(registry, 256, seeds=1)}
    assert cells == {(d, x) for d in TABLES[256].datasets for x in TABLES[256].losses}
    assert {p.dataset for p in plan(registry, 224, seeds=1)} == {"cub", "cars", "sop"}
    with pytest.raises(ConfigError, match="table 224 has no dataset inat"):
        plan(registry, 224, datasets=["inat"])
    with pytest.raises(ConfigError, match="no method multisimilarity"):
        plan(registry, 224, losses=["ms"])
    with pytest.raises(ConfigError, match="--table must be 224 or 256"):
        plan(registry, 512)
    with pytest.raises(ConfigError, match="--seeds"):
        plan(registry, 256, seeds=0)


def test_reproduce_cli_dry_run_then_queue_then_nothing(tmp_path):
    db = str(tmp_path / "e.db")
    runner = CliRunner()
    args = ["reproduce", "--table", "256", "--datasets", "cub", "--losses", "hybrid,contrastive",
            "--seeds", "2", "--gpus-per-job", "0", "--json", "--db", db]
    dry = json.loads(runner.invoke(app, args + ["--dry-run"]).stdout)
    assert dry["dry_run"] and [c["new_seeds"] for c in dry["cells"]] == [[0, 1], [0, 1]]
    assert [u["dataset"] for u in dry["untrained"]] == ["cub"] and dry["untrained"][0]["queued"] is None
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert sum(len(c["queued"]) for c in out["cells"]) == 4 and out["untrained"][0]["queued"]
    again = json.loads(runner.invoke(app, args).stdout)
    assert all(c["queued"] == [] and len(c["pending"]) == 2 for c in again["cells"])
    assert again["untrained"][0]["existing"] == out["untrained"][0]["queued"] and again["untrained"][0]["queued"] is None
    bad = runner.invoke(app, ["reproduce", "--table", "224", "--datasets", "inshop", "--db", db])
    assert bad.exit_code == 2 and "has no dataset inshop" in bad.stderr


def test_compare_table_markdown_with_a_few_cells_filled(registry):
    fp = reference_fingerprint("cub")
    for seed, r1 in ((0, 0.70), (1, 0.72), (2, 0.74)):  # cub/hybrid: three comparable seeds
        add_run(registry, recipe("cub", "hybrid", 224).with_overrides(seed=seed), r1, fingerprint=fp)
    add_run(registry, recipe("cub", "triplet", 224), 0.0, status="queued")
    add_run(registry, recipe("cars", "hybrid", 224), 0.0, status="running")
    add_run(registry, recipe("cars", "triplet", 224), 0.88, fingerprint=reference_fingerprint("cars"))
    add_run(registry, configure("cars", "contrastive", 224, sets=["model.arch=tiny"]), 0.5,
            fingerprint=reference_fingerprint("cars"))  # not comparable: the cell stays missing
    data = table_data(registry, 224, datasets=["cub", "cars"])
    assert data["datasets"] == ["cub", "cars"] and [r["loss"] for r in data["rows"]] == list(TABLES[224].losses)
    hyb = {r["loss"]: r for r in data["rows"]}["hybrid"]["cells"]["cub"]
    assert (hyb["n"], hyb["mean"], hyb["std"]) == (3, pytest.approx(72.0), pytest.approx(2.0))
    assert hyb["ci"] == pytest.approx(4.303 * 2.0 / 3 ** 0.5)
    md = table_markdown(data)
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in md.splitlines()
            if l.startswith("| ") and not l.startswith("| Method")}
    assert md.splitlines()[2] == "| Method | CUB paper | CUB ours | Cars paper | Cars ours |"
    # published (figure-read) numbers with their source note, ours as mean ± CI (n)
    assert rows["Hybrid"] == ["71.9 [1]", "72.00 ± 4.97 (n=3)", "91.1 [1]", "1 running"]
    assert rows["Triplet"] == ["64.2 [1]", "1 queued", "88.8 [1]", "88.00 (n=1)"]
    assert rows["Contrastive"] == ["66.2 [1]", "missing", "79.5 [1]", "missing"]
    assert "[1] reference implementation README figure" in md and "read off a figure" in md
    cli = CliRunner().invoke(app, ["compare", "--table", "224", "--datasets", "cub,cars", "--format", "markdown",
                                   "--db", registry.url])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout == md
