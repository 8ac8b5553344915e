"""``ctxsim doctor`` (ctxsim.registry.doctor) and the one line every command gives for a damaged
registry file: integrity, schema, and jobs marked running that nothing runs (a dead process on this
host, a silent heartbeat), which ``--fix`` requeues without deleting anything."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from proc_helpers import run_ctxsim
from sqlalchemy import select, update

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, utcnow
from ctxsim.runner.probe import probe_config

ctxsim = run_ctxsim


@pytest.fixture
def stuck(tmp_path):
    """A registry with a job claimed by a process that no longer exists, one whose heartbeat is
    10 minutes old, and one queued."""
    db = tmp_path / "e.db"
    reg = open_registry(db)
    jobs.enqueue_many(reg, [probe_config(label=str(i)) for i in range(3)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import socket

    dead = jobs.claim(reg, "w-dead", host=socket.gethostname(), pid=gone.pid)
    silent = jobs.claim(reg, "w-silent", host="elsewhere", pid=1)
    with reg.begin() as s:
        s.execute(update(Job).where(Job.id == silent.id).values(heartbeat_at=utcnow() - timedelta(minutes=10)))
    reg.dispose()
    return db, dead.id, silent.id


def test_doctor_finds_jobs_that_nothing_runs_and_fix_requeues_them(stuck):
    db, dead, silent = stuck
    r = ctxsim("doctor", "--db", str(db))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "integrity_check ok" in r.stdout and "schema version" in r.stdout
    assert f"job {dead} is running but its process" in r.stdout and "is gone" in r.stdout
    assert f"job {silent} is running but has had no heartbeat for 6" in r.stdout  # 600 s, the bound is 300
    assert "2 problem(s); `ctxsim doctor --fix`" in r.stderr
    r = ctxsim("doctor", "--fix", "--json", "--db", str(db))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted((f["id"], f["status"]) for f in json.loads(r.stdout)["fixed"]) == [(dead, "queued"), (silent, "queued")]
    reg = open_registry(db)
    with reg.Session() as s:
        assert [j.status for j in s.scalars(select(Job).order_by(Job.id))] == ["queued"] * 3  # nothing deleted
        msgs = list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == dead, JobEvent.kind == "requeued")))
    assert msgs and "ctxsim doctor --fix" in msgs[0]
    reg.dispose()
    r = ctxsim("doctor", "--db", str(db))
    assert r.returncode == 0 and "0 running job(s)" in r.stdout, r.stdout + r.stderr


def test_a_damaged_registry_file_is_one_line_with_the_way_out(tmp_path):
    """Bytes overwritten in the middle of the file: ls, show and doctor exit 3 with one line naming
    the file, the problem and what to do, never a traceback."""
    db = tmp_path / "e.db"
    reg = open_registry(db)
    jobs.enqueue_many(reg, [probe_config(label="x" * 300 + str(i)) for i in range(300)])
    reg.dispose()
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.seek((size // 4096 // 2) * 4096)
        fh.write(b"\xff" * 4096)
    for args in (["ls"], ["doctor"]):
        r = ctxsim(*args, "--db", str(db))
        assert r.returncode == 3 and "Traceback" not in r.stderr, (args, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: registry {db} is damaged (") and "malformed" in last, last
        assert "ctxsim doctor" in last and ".recover" in last
