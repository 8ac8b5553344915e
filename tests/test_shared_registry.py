"""A shared PostgreSQL registry (docs/architecture.md §5.3): two worker processes posing as two machines
(``--host-name``) drain one sweep of tiny training jobs; every job runs exactly once, each job
records the host that ran it, and ``ctxsim ls`` shows it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import pg_schema_url
from sqlalchemy import func, select

from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric, Worker
from ctxsim.train.events import read_events


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctxsim.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_hosts_share_a_sweep_on_postgres(pg_url, tmp_path):
    with pg_schema_url(pg_url) as url:
        # the URL (with its password) travels in the environment, never on a command line
        env = dict(os.environ, CTXSIM_DB=url, CTXSIM_RUNS=str(tmp_path / "runs"), OMP_NUM_THREADS="1")
        r = _cli("sweep", "-d", "synthetic", "-l", "hybrid,contrastive", "--seeds", "2", "--epochs", "1",
                 "--set", "max_steps_per_epoch=2", "--set", "device=cpu", "--gpus-per-job", "0", "--json", env=env)
        assert r.returncode == 0, r.stderr
        ids = [j["id"] for j in json.loads(r.stdout)["jobs"]]
        assert len(ids) == 4
        procs, logs = [], []
        for host in ("node-a", "node-b"):
            logs.append(tmp_path / f"{host}.log")
            with open(logs[-1], "ab") as fh:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--poll", "0.2",
                     "--device", "cpu", "--host-name", host], stdout=fh, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True))
        try:
            rcs = [p.wait(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
        text = "\n".join(p.read_text() for p in logs)
        assert rcs == [0, 0], text
        assert "Traceback" not in text

        reg = open_registry(url)
        with reg.Session() as s:
            rows = list(s.scalars(select(Job).where(Job.id.in_(ids))))
            claims = s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.kind == "claimed"))
            steps = s.scalar(select(func.count()).select_from(Metric).where(Metric.key == "train/loss"))
            worker_hosts = set(s.scalars(select(Worker.host)))
        assert {j.status for j in rows} == {"done"}, [(j.id, j.status, j.error) for j in rows]
        assert {j.attempts for j in rows} == {1} and claims == 4  # nobody claimed a job twice
        assert steps == 4 * 2
        assert {j.worker_host for j in rows} == {"node-a", "node-b"}  # the work was shared
        assert worker_hosts == {"node-a", "node-b"}
        for j in rows:
            assert j.worker_id.startswith(j.worker_host + ":")
            starts = [e for e in read_events(Path(j.run_dir) / "events.jsonl") if e.kind == "start"]
            assert len(starts) == 1  # ran exactly once
        # ctxsim ls shows where each job ran
        ls = _cli("ls", "--json", env=env)
        assert ls.returncode == 0, ls.stderr
        assert {r["id"]: r["worker_host"] for r in json.loads(ls.stdout)} == {j.id: j.worker_host for j in rows}
        table = _cli("ls", env={**env, "COLUMNS": "200"})
        assert "node-a" in table.stdout and "node-b" in table.stdout
        reg.dispose()
