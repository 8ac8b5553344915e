"""A registry server restarting while a job trains (ctxsim.registry.outage): a throwaway PostgreSQL
cluster of this test's own (.ci/start-postgres.sh on a free port) is stopped while a probe job runs
its last epoch and started again after the job finished. The job's sink keeps its points, its final
status waits for the server, and the job ends done with the metrics of an uninterrupted run.
(The SQLite side, a lock held past the lock timeout: tests/test_lock.py.)"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import require
from sqlalchemy import select

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, Metric
from ctxsim.runner.probe import probe_config
from ctxsim.train.events import read_events

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A PostgreSQL cluster in ``folder`` on ``port``, started and stopped by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> str:
        env = dict(os.environ, CTXSIM_PG_DIR=str(self.folder), CTXSIM_PG_PORT=str(self.port))
        r = subprocess.run(["bash", str(ROOT / ".ci" / "start-postgres.sh")], capture_output=True, text=True,
                           env=env, timeout=180)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split("=", 1)[1]

    def stop(self) -> None:
        subprocess.run([*self.runas, f"{self.bin}/pg_ctl", "-D", str(self.folder), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)


def _done_in_file(run_dir: str) -> bool:
    path = Path(run_dir) / "events.jsonl"
    try:
        return path.exists() and any(e.kind == "done" for e in read_events(path))
    except (ValueError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_restart_during_training_leaves_the_job_done(tmp_path):
    require(bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) and shutil.which("bash") is not None,
            "PostgreSQL server binaries are not installed (apt-get install postgresql)")
    # the server's own folder outside pytest's private tmp tree (which the postgres user cannot enter)
    folder = Path(tempfile.mkdtemp(prefix="ctxsim-pg-outage-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    server = Server(folder)
    url = server.start()
    try:
        reg = open_registry(url)
        gate = tmp_path / "gate"
        gated = probe_config(epochs=2, steps_per_epoch=3, sleep_s=0.05, label="restart", gate_file=gate, gate_step=3)
        plain = probe_config(epochs=2, steps_per_epoch=3, sleep_s=0.0, label="plain")
        (jid, _), (ref, _) = jobs.enqueue_many(reg, [gated, plain], runs_root=tmp_path / "runs")
        env = dict(os.environ, CTXSIM_REGISTRY_OUTAGE="120")
        log = tmp_path / "worker.log"
        with open(log, "ab") as fh:
            worker = subprocess.Popen([sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "",
                                       "--poll", "0.2", "--max-parallel", "1", "--db", url],
                                      stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while not (_row(reg, jid).last_step or 0) >= 3:
                assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
                time.sleep(0.1)
            run_dir = _row(reg, jid).run_dir
            reg.dispose()
            server.stop()  # the server goes away while the job holds its second epoch
            gate.touch()
            deadline = time.monotonic() + 120
            while not _done_in_file(run_dir):  # the job trained to its end with no server
                assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
                time.sleep(0.1)
            server.start()
            rc = worker.wait(timeout=300)
        finally:
            if worker.poll() is None:
                worker.kill()
        text = log.read_text()
        assert rc == 0, text
        reg = open_registry(url)
        row = _row(reg, jid)
        assert (row.status, row.attempts, row.last_step) == ("done", 1, 6), (row.status, row.error, text)
        assert _row(reg, ref).status == "done"
        mine, uninterrupted = _values(reg, jid), _values(reg, ref)
        assert len(mine) == 6 and mine == uninterrupted  # every point once, equal to a run without the restart
        out = (Path(run_dir) / "stdout.log").read_text()
        assert "the registry is unreachable" in out and "the registry is back" in out, out
        reg.dispose()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _row(reg, jid) -> Job:
    with reg.Session() as s:
        return s.get(Job, jid)


def _values(reg, jid) -> list[tuple[int, float]]:
    with reg.Session() as s:
        return [(m.step, m.value) for m in s.scalars(select(Metric).where(Metric.job_id == jid, Metric.key == "train/loss")
                                                     .order_by(Metric.step))]


