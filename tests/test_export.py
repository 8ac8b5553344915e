"""``ctxsim export runs|curves`` (ctxsim.report.export): the files, read back with pandas, hold
what ``ls --json`` and the metrics table hold, in csv, jsonl and parquet."""

from __future__ import annotations

import json

import pytest
from proc_helpers import run_ctxsim

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.sink import RegistrySink
from ctxsim.train.events import Event

pd = pytest.importorskip("pandas", reason="pandas comes with the test extras (pip install -e '.[test]')")


ctxsim = run_ctxsim


@pytest.fixture
def registry(tmp_path):
    """Two runs of the synthetic recipe (seeds 0 and 1) with steps and two evaluations each."""
    from ctxsim.train import recipe

    db = tmp_path / "e.db"
    reg = open_registry(db)
    cfgs = [recipe("synthetic", "hybrid", 256).with_overrides(seed=s, epochs=2) for s in (0, 1)]
    ids = [i for i, _ in jobs.enqueue_many(reg, cfgs, tags=["study"])]
    for n, jid in enumerate(ids):
        sink = RegistrySink(reg, jid)
        for step in range(1, 5):
            sink.emit(Event("step", {"step": step, "loss": 1.0 / step + n, "terms": {}}, float(step)))
        for epoch in (1, 2):
            sink.emit(Event("eval", {"epoch": epoch, "step": 2 * epoch,
                                     "metrics": {"R@1": 0.5 + 0.1 * epoch + n / 10, "MAP@R": 0.2 * epoch}}, 10.0 + epoch))
        sink.close()
    reg.dispose()
    return db, ids


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_runs_matches_ls_json(registry, tmp_path, fmt):
    db, ids = registry
    out = tmp_path / f"runs.{fmt}"
    r = ctxsim("export", "runs", "-o", str(out), "--format", fmt, "--db", str(db))
    assert r.returncode == 0 and f"wrote {out}: 2 run(s)" in r.stderr, r.stderr
    df = {"csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}[fmt](out)
    ls = json.loads(ctxsim("ls", "--json", "--db", str(db)).stdout)
    assert list(df["id"]) == [j["id"] for j in ls] == sorted(ids, reverse=True)
    for j in ls:
        row = df[df["id"] == j["id"]].iloc[0]
        assert row["status"] == j["status"] and row["dataset"] == "synthetic" and row["seed"] == j["seed"]
        assert row["config.seed"] == j["seed"] and row["config.epochs"] == 2 and row["tags"] == "study"
        assert row["R@1.best"] == pytest.approx(j["summaries"]["R@1"]["best"])
        assert row["train/loss.last"] == pytest.approx(j["summaries"]["train/loss"]["last"])
        assert row["MAP@R.best_step"] == 2 and row["config_hash"] == j["config_hash"]
        # never run, so compare has no data fingerprint to check it against: not comparable, and why
        assert not bool(row["comparable"]) and "no data fingerprint recorded" in row["deviations"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_curves_is_the_long_table_of_every_value(registry, tmp_path, fmt):
    db, ids = registry
    out = tmp_path / f"curves.{fmt}"
    r = ctxsim("export", "curves", *map(str, ids), "-o", str(out), "-f", fmt, "--db", str(db))
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(df.columns) == ["job_id", "key", "step", "value", "time"]
    loss = df[(df["job_id"] == ids[1]) & (df["key"] == "train/loss")]
    assert list(loss["step"]) == [1, 2, 3, 4] and list(loss["value"]) == pytest.approx([1.0 + 1 / s for s in (1, 2, 3, 4)])
    assert sorted(df[(df["job_id"] == ids[0]) & (df["key"] == "R@1")]["value"]) == pytest.approx([0.6, 0.7])
    r = ctxsim("export", "curves", str(ids[0]), "-k", "MAP@R", "-o", str(out), "-f", fmt, "--db", str(db))
    df = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert set(df["key"]) == {"MAP@R"} and len(df) == 2


def test_export_bad_input_is_one_line(registry, tmp_path):
    db, ids = registry
    r = ctxsim("export", "runs", "-o", str(tmp_path / "x"), "-f", "xlsx", "--db", str(db))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --format must be one of csv, parquet, jsonl, got 'xlsx'"]
    r = ctxsim("export", "curves", "999", "-o", str(tmp_path / "x.csv"), "--db", str(db))
    assert r.returncode == 4 and "no job 999" in r.stderr and not (tmp_path / "x.csv").exists()
