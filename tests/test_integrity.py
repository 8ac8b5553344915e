"""Integrity (issue 14): nothing is lost or mixed up when jobs are removed, interrupted or resumed,
and faults end in one line with their documented exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from proc_helpers import ForegroundProbe, interrupt_after_first_step
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.data.fake import corrupt_file, make_fake_benchmark
from ctxsim.errors import DataError, one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric
from ctxsim.runner.probe import probe_config

runner = CliRunner()
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "registry-v2.db"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _count(reg, model) -> int:
    with reg.Session() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


# ---- job ids ---------------------------------------------------------------------------------------
def test_job_ids_are_never_reused_after_rm(registry):
    a = jobs.enqueue(registry, probe_config(label="a"))
    b = jobs.enqueue(registry, probe_config(label="b"))
    assert (a, b) == (1, 2)
    jobs.rm(registry, b)
    assert jobs.enqueue(registry, probe_config(label="c")) == 3


def test_upgraded_registry_keeps_its_rows_and_stops_reusing_ids(tmp_path):
    """The v4 rebuild of the jobs table keeps every job, metric and event (no cascade), then a removed
    last job's id is not handed out again."""
    db = tmp_path / "experiments.db"
    shutil.copy(FIXTURE_V2, db)
    reg = open_registry(db)
    try:
        assert (_count(reg, Job), _count(reg, Metric), _count(reg, JobEvent)) == (3, 8, 11)
        jobs.rm(reg, 3)
        assert jobs.enqueue(reg, probe_config(label="new")) == 4
        jobs.rm(reg, 1)  # the cascade works again after the rebuild
        with reg.Session() as s:
            assert s.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == 1)) == 0
    finally:
        reg.dispose()


# ---- rm --force of a running job ------------------------------------------------------------------
def test_rm_force_stops_a_running_foreground_job_cleanly(tmp_path):
    db = str(tmp_path / "reg.db")
    reg = open_registry(db)
    jid = jobs.enqueue(reg, probe_config(epochs=1, steps_per_epoch=100000, sleep_s=0.01), executor="foreground")
    job = ForegroundProbe(reg, jid)
    assert job.stepped.wait(60), "the job never started"
    r = runner.invoke(app, ["rm", str(jid), "--force", "--db", db])
    assert r.exit_code == 0, r.output
    job.join()
    assert "error" not in job.outcome, job.outcome.get("error")
    assert job.outcome["result"]["stopped"] is True  # it stopped at a step boundary, then was removed
    with reg.Session() as s:
        assert s.get(Job, jid) is None
    assert jobs.enqueue(reg, probe_config(label="next")) == jid + 1
    reg.dispose()


def test_a_foreground_job_removed_without_waiting_ends_in_one_line(tmp_path):
    reg = open_registry(tmp_path / "reg.db")
    jid = jobs.enqueue(reg, probe_config(epochs=1, steps_per_epoch=100000, sleep_s=0.01), executor="foreground")
    job = ForegroundProbe(reg, jid)
    assert job.stepped.wait(60)
    jobs.rm(reg, jid, force=True, stop_timeout_s=0)  # no wait: its process finds the job gone
    job.join()
    err = job.outcome.get("error")
    if err is None:  # it noticed at a heartbeat, before any write failed
        assert job.outcome["result"]["stopped"] is True
    else:
        assert isinstance(err, jobs.JobNotFoundError), repr(err)
        assert one_line(err) == f"job {jid} was removed while it ran (ctxsim rm): stopped"
    reg.dispose()


# ---- Ctrl-C and resume: one job, one history ------------------------------------------------------
def test_ctrl_c_then_the_same_command_resumes_the_same_job(tmp_path):
    db = str(tmp_path / "reg.db")
    rd = tmp_path / "run"
    cmd = [sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "contrastive", "--epochs", "1",
           "--device", "cpu", "--set", "sampler.num_batches=300", "--run-dir", str(rd), "--json", "--db", db]
    rc, out, err = interrupt_after_first_step(cmd, rd / "events.jsonl", ENV)
    assert rc == 130, err
    first = json.loads(out)["id"]
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    res = json.loads(again.stdout)
    assert res["id"] == first and res["status"] == "done" and res["steps"] == 300
    reg = open_registry(db)
    try:
        with reg.Session() as s:
            rows = s.scalars(select(Job)).all()
            assert [(j.id, j.status) for j in rows] == [(first, "done")]
        from ctxsim.registry.queries import metric_series

        steps = [st for st, _ in metric_series(reg, first)["train/loss"]]
        assert steps == list(range(1, 301))  # the whole history under one id, no gap, no duplicate
    finally:
        reg.dispose()


# ---- foreground runs write the job's log ----------------------------------------------------------
def test_foreground_run_writes_the_log_that_ctxsim_logs_shows(tmp_path):
    db = str(tmp_path / "reg.db")
    r = runner.invoke(app, ["run", "-d", "synthetic", "-l", "contrastive", "--epochs", "1", "--device", "cpu",
                            "--set", "max_steps_per_epoch=2", "--json", "--db", db])
    assert r.exit_code == 0, r.output
    jid = json.loads(r.stdout)["id"]
    logs = runner.invoke(app, ["logs", str(jid), "--db", db])
    assert logs.exit_code == 0, logs.output
    assert f"job {jid} attempt 1" in logs.output and "start: 1 epochs" in logs.output and "done" in logs.output


# ---- the worker runs the preflight of a job queued with --no-check --------------------------------
def test_worker_preflight_fails_the_job_with_the_cli_line(tmp_path):
    db = str(tmp_path / "reg.db")
    missing = tmp_path / "elsewhere"
    r = runner.invoke(app, ["run", "-d", "cub", "-l", "hybrid", "--root", str(missing), "--detach", "--no-check",
                            "--json", "--db", db])
    assert r.exit_code == 0, r.output
    jid = json.loads(r.stdout)["id"]
    here = runner.invoke(app, ["run", "-d", "cub", "-l", "hybrid", "--root", str(missing), "--db", db])
    assert here.exit_code == 2
    line = here.output.strip().removeprefix("error: ")
    reg = open_registry(db)
    try:
        claimed = jobs.claim(reg, "test-worker")
        assert claimed is not None and claimed.id == jid
        p = subprocess.run([sys.executable, "-m", "ctxsim.runner.job", "--job", str(jid), "--attempt", "1",
                            "--db", db], capture_output=True, text=True, env=ENV, timeout=120)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr
        with reg.Session() as s:
            job = s.get(Job, jid)
            assert (job.status, job.error, job.exit_code) == ("failed", line, 2)
        assert _count(reg, Job) == 1  # the foreground attempt added no row
    finally:
        reg.dispose()


# ---- data loader faults ---------------------------------------------------------------------------
def test_loader_error_names_the_file_with_worker_processes(tmp_path):
    from ctxsim.data import build_data

    make_fake_benchmark("cub", tmp_path, train_classes=2, test_classes=1, per_class=3)
    data = build_data("cub", root=tmp_path)
    bad = data.train.path(1)
    corrupt_file(bad)
    loader = torch.utils.data.DataLoader(data.train, batch_size=6, num_workers=1)
    with pytest.raises(DataError) as e:
        next(iter(loader))
    assert "DataLoader worker" in str(e.value)  # torch's wrapping...
    line = one_line(e.value)  # ...unwrapped to the original one line, naming the file
    assert line.startswith("cannot read image ") and bad in line and "Caught" not in line


def test_default_loader_workers_fit_the_cores(monkeypatch):
    from ctxsim.train.build import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers(8) == 2
    assert loader_workers(1) == 1 and loader_workers(0) == 0


def test_skipped_images_are_counted_in_the_result_and_the_done_event(tmp_path):
    from ctxsim.registry.models import EventKind
    from ctxsim.registry.queries import job_event_payloads
    from ctxsim.runner.job import run_job_foreground
    from ctxsim.train.configure import configure

    root = tmp_path / "data"
    make_fake_benchmark("cub", root, train_classes=4, test_classes=2, per_class=4)
    from ctxsim.data import build_data

    corrupt_file(build_data("cub", root=root).train.path(0))
    cfg = configure("cub", "contrastive", 256, root=str(root), epochs=1, skip_bad_images=True,
                    sets=["model.arch=tiny", "model.backbone_weights=none", "batch_size=8", "sampler.num_batches=2",
                          "num_workers=0", "amp=false"])
    reg = open_registry(tmp_path / "reg.db")
    try:
        jid = jobs.enqueue(reg, cfg, executor="foreground", run_dir=tmp_path / "run")
        result = run_job_foreground(reg, jid, device="cpu")
        assert result.skipped_images >= 1
        (done,) = [p for p in job_event_payloads(reg, [jid], EventKind.DONE)[jid] if p and "metrics" in p]
        assert done["skipped_images"] == result.skipped_images
    finally:
        reg.dispose()


# ---- Ctrl-C while a write waits for the lock --------------------------------------------------------
HOLDER = r"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
c.execute("ROLLBACK")
"""


def test_ctrl_c_while_waiting_for_the_lock_queues_nothing(tmp_path):
    db = tmp_path / "reg.db"
    reg = open_registry(db)
    jobs.enqueue(reg, probe_config(label="before"))
    reg.dispose()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = {k: v for k, v in ENV.items() if k not in ("CTXSIM_DB", "CTXSIM_LOCK_TIMEOUT")}
        p = subprocess.Popen([sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid",
                              "--detach", "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
        seen = []
        for line in p.stderr:  # wait for the command to say that it waits for the lock
            seen.append(line)
            if line.startswith("waiting:"):
                break
        assert seen and seen[-1].startswith("waiting:"), seen
        p.send_signal(signal.SIGINT)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    rest = p.stderr.read()
    p.wait(timeout=60)
    assert p.returncode == 130, seen + [rest]
    assert "Traceback" not in rest and "nothing was queued" in rest
    assert p.stdout.read().strip() == ""  # no job id printed
    reg = open_registry(db)
    try:
        assert _count(reg, Job) == 1
    finally:
        reg.dispose()
