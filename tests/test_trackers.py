"""Trackers as event sinks (ctxsim.trackers): TensorBoard's own reader reads the scalars back; a
missing library is one line with the pip command and no job row; a tracker that fails never fails
the run."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ctxsim import names as ctxsim_names
from ctxsim.cli.main import app
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, Metric
from ctxsim.trackers import SINKS, TRACKER_LIBRARIES, GuardedSink, require_trackers


def _cfg(**kw):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(epochs=2, device="cpu", num_workers=0,
                                                            sampler_kw={"num_batches": 3}, **kw)


def test_tensorboard_mirrors_the_run_and_its_reader_reads_it_back(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard comes with the test extras (pip install -e '.[test]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ctxsim.runner.job import run_job_foreground

    reg = open_registry(str(tmp_path / "e.db"))
    jid = jobs.enqueue(reg, _cfg(track=["tensorboard"]), runs_root=tmp_path / "runs")
    run_job_foreground(reg, jid, device="cpu")
    with reg.Session() as s:
        job = s.get(Job, jid)
        stored = {(m.key, m.step): m.value for m in s.scalars(select(Metric).where(Metric.job_id == jid))}
    assert job.status == "done"
    ea = EventAccumulator(str(tmp_path / "runs" / job.run_dir.rsplit("/", 1)[-1] / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"train/loss", "R@1", "MAP@R", "final/R@1"} <= set(tags)
    for key in ("train/loss", "R@1", "MAP@R"):
        got = {(key, e.step): e.value for e in ea.Scalars(key)}
        want = {k: v for k, v in stored.items() if k[0] == key}
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)
    assert "config" in "".join(ea.Tags()["tensors"])
    reg.dispose()


def test_a_missing_tracker_library_is_one_line_and_no_job(tmp_path, monkeypatch):
    monkeypatch.setattr(ctxsim_names, "tracker_library_available", lambda name: False)
    with pytest.raises(Exception, match=r'tracker tensorboard needs the tensorboard package: pip install "ctxsim\[tensorboard\]"'):
        require_trackers(["tensorboard"])
    db = tmp_path / "e.db"
    r = CliRunner().invoke(app, ["run", "-d", "synthetic", "-l", "hybrid", "--track", "tensorboard", "--db", str(db)])
    assert r.exit_code == 2 and "pip install \"ctxsim[tensorboard]\"" in r.stderr, r.stderr
    if db.exists():
        reg = open_registry(db)
        with reg.Session() as s:
            assert s.scalars(select(Job)).all() == []
        reg.dispose()
    r = CliRunner().invoke(app, ["sweep", "-d", "synthetic", "-l", "hybrid", "--track", "nope", "--db", str(db)])
    assert r.exit_code == 2 and "unknown tracker 'nope' (track: tensorboard)" in r.stderr


def test_every_tracker_has_a_sink():
    assert set(SINKS) == set(TRACKER_LIBRARIES)


def test_a_failing_tracker_never_fails_the_run(tmp_path, caplog):
    """A tracker whose server goes away mid-run: one warning, the tracker is switched off, and the
    run ends done with every metric in the registry."""
    from ctxsim.runner.job import run_job_foreground

    class Flaky:
        def __init__(self) -> None:
            self.seen = 0

        def emit(self, event) -> None:
            self.seen += 1
            if self.seen > 3:
                raise ConnectionError("tracking server went away")

        def close(self) -> None:
            raise ConnectionError("still away")

    flaky = Flaky()
    reg = open_registry(str(tmp_path / "e.db"))
    jid = jobs.enqueue(reg, _cfg(), runs_root=tmp_path / "runs")
    with caplog.at_level(logging.WARNING, logger="ctxsim.trackers"):
        run_job_foreground(reg, jid, extra_sink=GuardedSink(flaky, "flaky"), device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.name == "ctxsim.trackers"]
    assert len(warnings) == 1 and "tracker flaky failed (emit: tracking server went away)" in warnings[0]
    assert flaky.seen == 4  # switched off after the failure
    with reg.Session() as s:
        assert s.get(Job, jid).status == "done"
        assert s.scalar(select(Metric.step).where(Metric.job_id == jid, Metric.key == "train/loss")
                        .order_by(Metric.step.desc()).limit(1)) == 6
    reg.dispose()
