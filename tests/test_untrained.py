"""The untrained-backbone baseline (ctxsim.baselines.untrained): one per evaluation setup, equal to
what a run's model gives before its first step, recorded once and reused; ``compare`` shows
``Δ untrained`` for a digits run (computing it on first need) and says how to compute the others."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctxsim.baselines.untrained import (
    UNTRAINED_KIND,
    evaluate_untrained,
    find_untrained,
    untrained_baseline,
    untrained_key,
)
from ctxsim.cli.main import app
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Baseline
from ctxsim.train import fit, load_checkpoint_model
from ctxsim.train.configure import configure

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_thread")]

FP = {"version": 1, "dataset": "digits", "val_classes": None,
      "splits": {"train": {"images": 900, "classes": 5}, "test": {"images": 897, "classes": 5}}}


def _digits(**sets):
    return configure("digits", "hybrid", sets=[f"{k}={v}" for k, v in sets.items()] + ["num_workers=0", "device=cpu"])


def test_one_key_per_evaluation_setup():
    base = _digits()
    same = [_digits(seed=3), configure("digits", "contrastive", sets=["num_workers=0", "device=cpu"]),
            _digits(epochs=9, lr=0.1), _digits(val_classes=2)]
    assert {untrained_key(c, FP) for c in same} == {untrained_key(base, FP)}
    other = [_digits(**{"model.embedding_size": 64}), _digits(**{"model.arch": "tiny"}),
             configure("digits", "hybrid", 224, sets=["num_workers=0"])]
    assert len({untrained_key(c, FP) for c in [base, *other]}) == 4
    # a different test split is another baseline; the training split (a validation carve-out) is not
    assert untrained_key(base, {**FP, "splits": {**FP["splits"], "test": {"images": 800, "classes": 5}}}) != untrained_key(base, FP)
    assert untrained_key(base, {**FP, "splits": {**FP["splits"], "train": {"images": 700, "classes": 4}}}) == untrained_key(base, FP)
    assert untrained_key(base, None) is None and untrained_key("not json", FP) is None


def test_the_baseline_is_the_model_a_run_starts_from_and_is_recorded_once(tmp_path, monkeypatch):
    cfg = _digits(epochs=1, max_steps_per_epoch=2)
    # a run stopped before its first step keeps its initial weights in the checkpoint
    first = fit(cfg, run_dir=tmp_path / "run", should_stop=lambda: True)
    assert first.status == "stopped" and first.steps == 0
    model, _ = load_checkpoint_model(tmp_path / "run" / "checkpoint.pt")
    from ctxsim.data import build_data
    from ctxsim.eval import evaluate_bundle

    want = evaluate_bundle(model.eval(), build_data("digits"), ks=cfg.ks or None)
    got, key = evaluate_untrained(cfg.with_overrides(seed=5), device="cpu")  # any run seed: the recipe's seed 0
    assert got == pytest.approx(want) and key

    reg = open_registry(str(tmp_path / "e.db"))
    m1, k1, computed1 = untrained_baseline(reg, cfg, device="cpu")
    assert computed1 and k1 == key and m1 == pytest.approx({k: 100 * v for k, v in want.items()})
    import ctxsim.train.evaluation as evaluation

    monkeypatch.setattr(evaluation, "evaluate_model", lambda *a, **k: pytest.fail("evaluated again"))
    m2, k2, computed2 = untrained_baseline(reg, cfg.with_overrides(seed=2, loss="contrastive", loss_kw={}), device="cpu")
    assert (m2, k2, computed2) == (pytest.approx(m1), k1, False)
    with reg.Session() as s:
        n = s.scalar(select(func.count()).select_from(Baseline).where(Baseline.kind == UNTRAINED_KIND))
    assert n == len(m1) and find_untrained(reg, [k1])[k1] == pytest.approx(m1)
    reg.dispose()


def test_compare_shows_delta_untrained_for_a_digits_run_and_how_to_get_the_others(tmp_path):
    from ctxsim.runner.job import run_job_foreground
    from tests.test_comparability import add_run, reference_fingerprint

    db = str(tmp_path / "e.db")
    reg = open_registry(db)
    cfg = _digits(epochs=1, max_steps_per_epoch=3)
    jid = jobs.enqueue(reg, cfg, runs_root=tmp_path / "runs")
    run_job_foreground(reg, jid, device="cpu")
    add_run(reg, configure("cub", "hybrid", 224), 0.6, fingerprint=reference_fingerprint("cub"))
    reg.dispose()
    r = CliRunner().invoke(app, ["compare", "--format", "json", "--db", db])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    digits = {x["metric"]: x for x in rows if x["dataset"] == "digits"}
    assert digits["R@1"]["untrained"] is not None
    assert digits["R@1"]["delta_untrained"] == pytest.approx(digits["R@1"]["final_mean"] - digits["R@1"]["untrained"])
    assert digits["MAP@R"]["delta_untrained"] is not None
    assert all(x["untrained"] is None for x in rows if x["dataset"] == "cub")
    assert "Δ untrained needs a baseline: ctxsim eval --untrained -d cub -r 224" in r.stderr
    # computed once: a second compare reads it (the table shows the column)
    reg = open_registry(db)
    with reg.Session() as s:
        before = s.scalar(select(func.count()).select_from(Baseline).where(Baseline.kind == UNTRAINED_KIND))
    r = CliRunner().invoke(app, ["compare", "--db", db])
    assert r.exit_code == 0 and "Δ untrained" in r.stdout, r.output
    with reg.Session() as s:
        assert s.scalar(select(func.count()).select_from(Baseline).where(Baseline.kind == UNTRAINED_KIND)) == before
    reg.dispose()


def test_eval_untrained_command(tmp_path):
    db = str(tmp_path / "e.db")
    args = ["eval", "--untrained", "-d", "digits", "--device", "cpu", "--set", "num_workers=0", "--json", "--db", db]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["computed"] and first["untrained"] and 0 < first["metrics"]["R@1"] <= 1
    again = json.loads(CliRunner().invoke(app, args).stdout)
    assert not again["computed"] and again["key"] == first["key"]
    assert again["metrics"] == pytest.approx(first["metrics"])
    r = CliRunner().invoke(app, ["eval", "--untrained", "--db", db])
    assert r.exit_code == 2 and "--untrained needs --dataset" in r.stderr
    r = CliRunner().invoke(app, ["eval", "--db", db])
    assert r.exit_code == 2 and "or --untrained --dataset D" in r.stderr


def test_an_untrained_job_records_the_baseline_and_is_not_a_run_in_compare(tmp_path):
    """The ``untrained`` job kind (what ``reproduce`` queues): run by the runner like any job, it
    emits epoch-0 events and, once done, records the baseline its runs are set beside."""
    from ctxsim.baselines.untrained import untrained_job_config
    from ctxsim.registry.queries import job_detail
    from ctxsim.report.compare import compare_rows
    from ctxsim.runner.job import run_job_foreground

    reg = open_registry(str(tmp_path / "e.db"))
    cfg = _digits(epochs=1, max_steps_per_epoch=2)
    jid = jobs.enqueue(reg, untrained_job_config(cfg), executor=jobs.FOREGROUND, runs_root=tmp_path / "runs")
    result = run_job_foreground(reg, jid, device="cpu")
    d = job_detail(reg, jid)
    assert d["status"] == "done" and d["summaries"]["R@1"]["last"] == pytest.approx(result["metrics"]["R@1"])
    stored = find_untrained(reg, [result["key"]])[result["key"]]
    assert stored == pytest.approx({k: 100 * v for k, v in result["metrics"].items()})
    direct, key = evaluate_untrained(cfg, device="cpu")
    assert key == result["key"] and direct == pytest.approx(result["metrics"])
    assert compare_rows(reg) == []  # a baseline, not a run
    reg.dispose()


def test_compare_on_a_registry_it_cannot_write_says_how_instead(tmp_path, monkeypatch):
    """A shared registry this user may only read: compare prints its table and, for the missing
    baseline, the command that computes it (nothing fails)."""
    import ctxsim.registry.db as registry_db
    from ctxsim.errors import RegistryError
    from ctxsim.runner.job import run_job_foreground

    db = str(tmp_path / "e.db")
    reg = open_registry(db)
    jid = jobs.enqueue(reg, _digits(epochs=1, max_steps_per_epoch=2), runs_root=tmp_path / "runs")
    run_job_foreground(reg, jid, device="cpu")
    reg.dispose()
    real = registry_db.open_registry

    def read_only(url=None, create=True, readonly=False, **kw):
        if not readonly:
            raise RegistryError(f"registry {url} is read-only for this user")
        return real(url, create=create, readonly=readonly, **kw)

    monkeypatch.setattr(registry_db, "open_registry", read_only)
    r = CliRunner().invoke(app, ["compare", "--format", "json", "--db", db])
    assert r.exit_code == 0, r.output
    assert all(x["untrained"] is None for x in json.loads(r.stdout))
    assert "untrained baselines not computed: registry" in r.stderr and "read-only for this user" in r.stderr
    assert "Δ untrained needs a baseline: ctxsim eval --untrained -d digits -r 256" in r.stderr
