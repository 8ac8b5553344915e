"""Workers as real processes: exactly-once under concurrency (SQLite and PostgreSQL), SIGKILL of a
worker -> reaped, resumed from the checkpoint without metric gaps or duplicates, cancel of a process
group, graceful shutdown, failures, GPU assignment, the foreground runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from registry_helpers import pg_schema_url
from sqlalchemy import func, select

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric
from ctxsim.registry.queries import metric_series
from ctxsim.runner.job import run_job_foreground
from ctxsim.runner.probe import probe_config
from ctxsim.runner.worker import LocalWorker
from ctxsim.train.events import read_events


def start_worker(url: str, *args: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--db", url, "--poll", "0.2", *args]
    fh = open(log, "ab")
    return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(cond, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_row(reg, jid):
    with reg.Session() as s:
        return s.get(Job, jid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def attempts_log(reg, jid) -> list[str]:
    p = Path(job_row(reg, jid).run_dir) / "probe_attempts.log"
    return p.read_text().splitlines() if p.exists() else []


# ------------------------------------------------------------------ exactly once


def _sixty_jobs_four_workers(url: str, tmp_path: Path) -> None:
    reg = open_registry(url)
    ids = [i for i, _ in jobs.enqueue_many(reg, [probe_config(1, 3, label=i) for i in range(60)],
                                            runs_root=tmp_path / "runs")]
    t0 = time.monotonic()
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [start_worker(url, "--once", "--gpus", "", log=logs[i]) for i in range(4)]
    try:
        rcs = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    took = time.monotonic() - t0
    text = "\n".join(p.read_text() for p in logs)
    assert rcs == [0, 0, 0, 0], text
    assert "database is locked" not in text and "Traceback" not in text
    with reg.Session() as s:
        rows = list(s.scalars(select(Job).where(Job.id.in_(ids))))
        assert {j.status for j in rows} == {"done"}, [(j.id, j.status, j.error) for j in rows if j.status != "done"]
        assert {j.attempts for j in rows} == {1}
        claims = s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.kind == "claimed"))
        assert claims == 60
        assert s.scalar(select(func.count()).select_from(Metric).where(Metric.key == "train/loss")) == 60 * 3
        workers = {j.worker_id for j in rows}
    assert len(workers) >= 2  # the work was shared
    for jid in ids:
        assert len(attempts_log(reg, jid)) == 1  # every job ran exactly once
        assert (Path(job_row(reg, jid).run_dir) / "stdout.log").exists()
    print(f"60 jobs, 4 workers: {took:.1f} s")
    reg.dispose()


@pytest.mark.slow
def test_sixty_jobs_four_workers_sqlite(tmp_path):
    _sixty_jobs_four_workers(str(tmp_path / "experiments.db"), tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_sixty_jobs_four_workers_postgres(pg_url, tmp_path):
    with pg_schema_url(pg_url) as url:
        _sixty_jobs_four_workers(url, tmp_path)


# ------------------------------------------------------------------ crash, resume, cancel, shutdown


@pytest.mark.slow
def test_sigkilled_worker_job_is_requeued_and_resumes(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(epochs=4, steps_per_epoch=5, sleep_s=0.12, spawn_child=True))
    a = start_worker(url, "--gpus", "", "--heartbeat-expiry", "3", log=tmp_path / "a.log")
    try:
        wait_for(lambda: job_row(reg, jid).epoch >= 2 and job_row(reg, jid).last_step >= 12, 60, "epoch 2")
        first = attempts_log(reg, jid)[0]
        job_pid = int(first.split()[0])
        grandchild = int(first.split("child=")[1])
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        # the job's process group dies with its worker (no unsupervised orphan keeps running)
        wait_for(lambda: not alive(job_pid) and not alive(grandchild), 10, "the orphaned job group to die")
        assert job_row(reg, jid).status == "running"  # until the heartbeat expires
        b = start_worker(url, "--gpus", "", "--once", "--heartbeat-expiry", "3", log=tmp_path / "b.log")
        assert b.wait(timeout=90) == 0, (tmp_path / "b.log").read_text()
    finally:
        for p in (a,):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    job = job_row(reg, jid)
    assert (job.status, job.attempts) == ("done", 2), (tmp_path / "b.log").read_text()
    starts = attempts_log(reg, jid)
    assert len(starts) == 2
    assert int(starts[1].split("start_epoch=")[1].split()[0]) >= 2  # resumed from its checkpoint
    series = metric_series(reg, jid)
    assert [st for st, _ in series["train/loss"]] == list(range(1, 21))  # no gap, no duplicate
    assert [st for st, _ in series["R@1"]] == [1, 2, 3, 4]
    with reg.Session() as s:
        kinds = [e.kind for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.id))]
    assert kinds.count("claimed") == 2 and "requeued" in kinds
    assert "heartbeat expired" in (tmp_path / "b.log").read_text()


def test_cancel_stops_the_process_group(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(epochs=1, steps_per_epoch=10_000, sleep_s=0.05, spawn_child=True))
    w = start_worker(url, "--gpus", "", "--once", "--grace", "3", log=tmp_path / "w.log")
    try:
        wait_for(lambda: job_row(reg, jid).last_step > 0, 60, "the job to report steps")
        line = attempts_log(reg, jid)[0]
        job_pid, grandchild = int(line.split()[0]), int(line.split("child=")[1])
        t0 = time.monotonic()
        assert jobs.cancel(reg, jid) == "cancel_requested"
        wait_for(lambda: job_row(reg, jid).status == "cancelled", 15, "status cancelled")
        took = time.monotonic() - t0
        wait_for(lambda: not alive(job_pid) and not alive(grandchild), 5, "the job's process group to die")
        assert took < 8, took
        assert w.wait(timeout=20) == 0
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    job = job_row(reg, jid)
    assert "cancelled by request" in job.error
    assert job.last_step < 10_000


def test_cancel_bound_is_heartbeat_plus_grace_plus_one_pass(tmp_path):
    reg = open_registry(str(tmp_path / "e.db"))
    w = LocalWorker(reg, [], poll_s=0.2, heartbeat_expiry_s=60.0, grace_s=1.0)
    assert w.heartbeat_s == 0.2
    assert w.cancel_bound_s == pytest.approx(0.2 + 1.0 + 0.2)
    slow = LocalWorker(reg, [], poll_s=5.0, heartbeat_expiry_s=8.0, grace_s=10.0)
    assert slow.heartbeat_s == 2.0 and slow.cancel_bound_s == pytest.approx(2.0 + 10.0 + 2.0)


def test_cancel_kills_a_job_blocked_in_a_step_after_the_grace(tmp_path):
    """A job that cannot check its stop flag (blocked in one 600 s step, SIGTERM only sets the
    flag) is SIGKILLed by the worker once the grace has passed: the cancel is honoured within
    ``cancel_bound_s`` (asserted with a generous margin for a loaded machine)."""
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(epochs=1, steps_per_epoch=2, sleep_s=600, spawn_child=True))
    bound = LocalWorker(reg, [], poll_s=0.2, grace_s=1.0).cancel_bound_s
    w = start_worker(url, "--gpus", "", "--once", "--grace", "1", log=tmp_path / "w.log")
    try:
        events = Path(job_row(reg, jid).run_dir) / "events.jsonl"  # written through at each event
        wait_for(lambda: events.exists() and '"step"' in events.read_text(), 60, "the job to enter its long step")
        line = attempts_log(reg, jid)[0]
        job_pid, grandchild = int(line.split()[0]), int(line.split("child=")[1])
        t0 = time.monotonic()
        assert jobs.cancel(reg, jid) == "cancel_requested"
        wait_for(lambda: job_row(reg, jid).status == "cancelled", bound + 30, "status cancelled")
        took = time.monotonic() - t0
        wait_for(lambda: not alive(job_pid) and not alive(grandchild), 5, "the job's process group to die")
        assert w.wait(timeout=20) == 0
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    job = job_row(reg, jid)
    assert job.error == "cancelled by request (killed by signal 9)", job.error  # the escalation, not the job
    assert [e.kind for e in read_events(events)].count("step") == 1  # killed inside its first step
    assert took < bound + 15, (took, bound)


def test_worker_sigterm_requeues_its_job_without_counting_the_attempt(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(epochs=1, steps_per_epoch=10_000, sleep_s=0.05))
    w = start_worker(url, "--gpus", "", "--grace", "3", log=tmp_path / "w.log")
    try:
        wait_for(lambda: job_row(reg, jid).last_step > 0, 60, "the job to report steps")
        os.kill(w.pid, signal.SIGTERM)
        assert w.wait(timeout=20) == 0
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    job = job_row(reg, jid)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)
    assert "stopping 1 job" in (tmp_path / "w.log").read_text()


def test_failed_job_and_gpu_assignment(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    bad = jobs.enqueue(reg, probe_config(1, 2, fail=True), priority=-1)  # after the two GPU jobs
    g1 = jobs.enqueue(reg, probe_config(1, 4, sleep_s=0.3, label="g1"), n_gpus=1)
    g2 = jobs.enqueue(reg, probe_config(1, 4, sleep_s=0.3, label="g2"), n_gpus=1)  # claimed with g1: both slots
    too_big = jobs.enqueue(reg, probe_config(1, 1, label="big"), n_gpus=3)
    w = start_worker(url, "--gpus", "0,1", "--once", log=tmp_path / "w.log")
    assert w.wait(timeout=90) == 0, (tmp_path / "w.log").read_text()
    b = job_row(reg, bad)
    assert (b.status, b.exit_code) == ("failed", 1)
    assert "probe job asked to fail" in b.error
    assert "RuntimeError" in (Path(b.run_dir) / "stdout.log").read_text()  # the traceback is in the log
    seen = set()
    for jid in (g1, g2):
        assert job_row(reg, jid).status == "done"
        log = (Path(job_row(reg, jid).run_dir) / "stdout.log").read_text()
        seen.add(log.split("CUDA_VISIBLE_DEVICES=")[1].split()[0])
    assert seen == {"'0'", "'1'"}  # the two overlapping jobs got different GPUs
    assert job_row(reg, too_big).status == "queued"  # needs 3 GPUs: not for this worker


def test_foreground_run_done_and_cancel(registry):
    done = jobs.enqueue(registry, probe_config(1, 3, label="fg"), executor="foreground")
    out = run_job_foreground(registry, done, heartbeat_s=0.1)
    assert out["stopped"] is False
    assert job_row(registry, done).status == "done"
    with pytest.raises(jobs.JobStateError):
        run_job_foreground(registry, done)
    slow = jobs.enqueue(registry, probe_config(1, 10_000, sleep_s=0.01, label="fg2"), executor="foreground")
    threading.Timer(0.5, lambda: jobs.cancel(registry, slow)).start()
    out = run_job_foreground(registry, slow, heartbeat_s=0.1)
    assert out["stopped"] is True
    job = job_row(registry, slow)
    assert job.status == "cancelled" and job.error == "cancel requested"
    assert 0 < job.last_step < 10_000


# ------------------------------------------------------------------ job kinds and run folders


def test_every_job_kind_loads_and_an_unknown_kind_is_one_line(tmp_path):
    import inspect

    from ctxsim.errors import ConfigError
    from ctxsim.runner import kinds
    from ctxsim.runner.job import execute
    from ctxsim.train.events import NullSink

    assert set(kinds.KINDS) >= {"train", "toy", "probe", "reference-eval"}
    for name in kinds.KINDS:
        params = list(inspect.signature(kinds.load_entry(name)).parameters)
        assert params == ["cfg", "sink", "run_dir", "should_stop"], (name, params)
    with pytest.raises(ConfigError) as e:
        execute('{"kind": "nope"}', NullSink(), str(tmp_path))
    assert str(e.value).startswith("unknown job kind 'nope' (known: ") and "\n" not in str(e.value)
    out = execute('{"kind": "probe", "epochs": 1, "steps_per_epoch": 2}', NullSink(), str(tmp_path))
    assert out == {"epochs_run": [1], "stopped": False, "start_epoch": 0}
    assert '"kind": "step"' in (tmp_path / "events.jsonl").read_text()  # the runner adds events.jsonl


def test_one_run_folder_rule(tmp_path, registry):
    from ctxsim.registry.rundirs import run_folder
    from ctxsim.train import recipe

    cfg = recipe("cub", "hybrid", 256).with_overrides(seed=3)
    f = jobs.config_fields(cfg)
    # `ctxsim run` resumes the config's folder: the same name as before the rule was shared
    assert run_folder(tmp_path, f) == tmp_path / f"cub-hybrid-256-{cfg.config_hash()[:8]}"
    named = cfg.with_overrides(name="my run/1")
    assert run_folder(tmp_path, jobs.config_fields(named)).name == f"my_run_1-{named.config_hash()[:8]}"
    # a queued job (sweep, dashboard) gets the same name suffixed with its id
    jid = jobs.enqueue(registry, cfg, runs_root=tmp_path)
    assert job_row(registry, jid).run_dir == str(run_folder(tmp_path, f, jid))
    assert job_row(registry, jid).run_dir.endswith(f"cub-hybrid-256-{cfg.config_hash()[:8]}-job{jid}")
    probe = jobs.enqueue(registry, probe_config(label="x"), runs_root=tmp_path)
    assert Path(job_row(registry, probe).run_dir).name.startswith("probe-")


def test_a_long_name_gets_a_short_deterministic_folder_and_the_run_finishes(tmp_path):
    """A 300-character (or multi-byte) name: the run folder is cut to fit the filesystem's 255-byte
    limit, the same name always gives the same folder, the registry keeps the whole name, and
    ``ctxsim run`` ends done (it used to fail on "File name too long" and leave the job running)."""
    import subprocess
    import sys

    from ctxsim.registry.rundirs import MAX_STEM_BYTES, short_stem

    long = "A" * 300
    assert short_stem(long) == short_stem(long) and len(short_stem(long).encode()) <= MAX_STEM_BYTES
    assert short_stem(long) != short_stem("A" * 299) and short_stem("short") == "short"
    wide = "é" * 150  # 300 bytes: cut between characters, never inside one
    assert len(short_stem(wide).encode()) <= MAX_STEM_BYTES and short_stem(wide).startswith("é" * 95)
    db = tmp_path / "e.db"
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid", "--name", long,
                        "--set", "epochs=1", "--set", "sampler.num_batches=2", "--device", "cpu", "--db", str(db)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k not in ("CTXSIM_RUNS", "CTXSIM_DB")})
    reg = open_registry(str(db))
    with reg.Session() as s:
        (job,) = s.scalars(select(Job)).all()
    assert r.returncode == 0 and job.status == "done", (r.stderr[-2000:], job.status, job.error)
    assert json.loads(job.config_json)["name"] == long
    folder = Path(job.run_dir)
    assert folder.is_dir() and folder.name.startswith(short_stem(long)) and (folder / "result.json").exists()
    reg.dispose()


def test_a_run_folder_that_cannot_be_made_fails_the_job_with_one_line(tmp_path):
    """``ctxsim run`` whose run folder cannot be created (a file stands in its path): one line, exit
    1, and the job row says failed with the reason; it is never left running."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("")
    db = tmp_path / "e.db"
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid", "--set", "epochs=1",
                        "--device", "cpu", "--run-dir", str(tmp_path / "afile" / "run"), "--db", str(db)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: job 1 failed: NotADirectoryError"), r.stderr
    assert "traceback in" not in r.stderr  # there is no events.jsonl to point at
    reg = open_registry(str(db))
    with reg.Session() as s:
        (job,) = s.scalars(select(Job)).all()
    assert job.status == "failed" and "Not a directory" in job.error, (job.status, job.error)
    reg.dispose()


def test_worker_fails_a_job_whose_folder_cannot_be_made_and_takes_the_next(tmp_path):
    """A worker never crashes on a job's fault: the job whose run folder cannot be created is failed
    with the reason (one line on the console, no traceback) and the next job runs."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("")
    db = tmp_path / "e.db"
    reg = open_registry(str(db))
    (bad, _), (good, _) = jobs.enqueue_many(reg, [probe_config(label="bad"), probe_config(label="good")],
                                            runs_root=tmp_path / "runs",
                                            run_dirs=[tmp_path / "afile" / "run", None])
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--poll", "0.2",
                        "--db", str(db)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert f"job {bad}: failed: cannot create the run folder" in r.stderr + r.stdout
    assert job_row(reg, bad).status == "failed" and "Not a directory" in job_row(reg, bad).error
    assert job_row(reg, good).status == "done"
    reg.dispose()


def test_a_zero_byte_checkpoint_on_resume_is_one_line_with_the_way_on(tmp_path):
    """A job resuming from a zero-byte checkpoint.pt: failed with the file, the reason and the way
    on (delete it, or --fresh), as one line in its log and its row; no traceback anywhere."""
    import subprocess
    import sys

    from ctxsim.train import recipe

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"")
    db = tmp_path / "e.db"
    reg = open_registry(str(db))
    cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=1, device="cpu", num_workers=0,
                                                            sampler_kw={"num_batches": 2})
    ((jid, _),) = jobs.enqueue_many(reg, [cfg], run_dirs=[run_dir])
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--poll", "0.2",
                        "--device", "cpu", "--db", str(db)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    row = job_row(reg, jid)
    log = (run_dir / "stdout.log").read_text()
    assert row.status == "failed" and row.error.startswith(f"cannot read checkpoint {run_dir / 'checkpoint.pt'}"), row.error
    assert "rm " in row.error and "--fresh" in row.error
    assert "Traceback" not in log and "error: cannot read checkpoint" in log, log
    reg.dispose()


def _trainer():
    from ctxsim.train.trainer import Trainer

    return Trainer


def _engine():
    from ctxsim.train import engine

    return engine


@pytest.mark.parametrize("phase, owner, name", [
    ("data and model", _trainer, "build"),
    ("training", _trainer, "train_epoch"),
    ("evaluation", _trainer, "run_eval"),
    ("checkpoint", _trainer, "save"),
    ("result file", _engine, "_write_json"),
])
def test_a_failure_in_any_phase_settles_the_job(tmp_path, monkeypatch, phase, owner, name):
    """Whatever phase fails (building data and model, a training step, the evaluation, writing the
    checkpoint or the result), the job ends failed with one line that names the failure: never
    left running."""
    from ctxsim.runner.job import run_job_foreground
    from ctxsim.train import recipe

    reg = open_registry(str(tmp_path / "e.db"))
    cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=1, device="cpu", num_workers=0,
                                                            sampler_kw={"num_batches": 2})
    jid = jobs.enqueue(reg, cfg, runs_root=tmp_path / "runs")
    target = owner()
    real = getattr(target, name)

    def broken(*args, **kw):
        if name == "_write_json" and not str(args[0]).endswith("result.json"):
            return real(*args, **kw)  # config.json and the fingerprint are written; the result fails
        raise RuntimeError(f"injected failure in {phase}")

    monkeypatch.setattr(target, name, broken)
    with pytest.raises(RuntimeError, match="injected"):
        run_job_foreground(reg, jid, device="cpu")
    row = job_row(reg, jid)
    assert row.status == "failed" and row.finished_at is not None, (row.status, row.error)
    assert row.error == f"RuntimeError: injected failure in {phase}"
    reg.dispose()
