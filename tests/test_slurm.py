"""The Slurm executor (ctxsim.runner.slurm) through submitit's LOCAL executor: options, state
mapping, and four queued jobs run by ``ctxsim worker --executor slurm``: a tiny training job
finishes; a probe job that runs until stopped is cancelled while running; a tiny training job is
preempted (USR2, as Slurm signals before a time limit or a preemption), requeued in place and
resumed from its mid-epoch checkpoint; and one whose task is SIGKILLed (a node failure) is
resubmitted by the poller and resumes from its epoch checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ctxsim.errors import ConfigError
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric
from ctxsim.runner.probe import probe_config
from ctxsim.runner.slurm import SlurmOptions, SlurmWorker, state_action, url_for_nodes
from ctxsim.train.events import read_events


def test_slurm_states_map_to_registry_actions():
    assert state_action("RUNNING") == state_action("PENDING") == state_action("REQUEUED") == "active"
    assert state_action("COMPLETED") == state_action("FINISHED") == "ended"
    assert state_action("FAILED") == state_action("OUT_OF_MEMORY") == state_action("INTERRUPTED") == "crashed"
    assert state_action("TIMEOUT") == state_action("PREEMPTED") == state_action("NODE_FAIL") == "requeue"
    assert state_action("CANCELLED by 1234") == state_action("CANCELLED+") == "cancelled"
    assert state_action("UNKNOWN") == state_action("") == "active"  # sacct lag: ask again later


def test_options_from_file_and_command_line(tmp_path):
    toml = tmp_path / "slurm.toml"
    toml.write_text('[slurm]\npartition = "gpu"\ntime = 120\ngpus-per-node = 4\naccount = "lab"\n'
                    'additional = { "mail-type" = "END" }\n')
    o = SlurmOptions.from_file(toml, partition="long", time_min=None)
    assert (o.partition, o.time_min, o.gpus_per_node, o.account) == ("long", 120, 4, "lab")  # the CLI wins
    p = o.executor_parameters(2, "ctxsim-7")
    assert p["gpus_per_node"] == 2 and p["timeout_min"] == 120 and p["slurm_partition"] == "long"
    assert p["slurm_account"] == "lab" and p["slurm_additional_parameters"] == {"mail-type": "END"}
    js = tmp_path / "slurm.json"
    js.write_text(json.dumps({"time": 30, "qos": "high"}))
    assert SlurmOptions.from_file(js).executor_parameters(0, "x")["slurm_qos"] == "high"
    js.write_text(json.dumps({"partiton": "gpu"}))
    with pytest.raises(ConfigError, match="unknown slurm option 'partiton'"):
        SlurmOptions.from_file(js)
    with pytest.raises(ConfigError, match="--time must be > 0"):
        SlurmOptions(time_min=0).validate()
    with pytest.raises(ConfigError, match="slurm-config"):
        SlurmOptions.from_file(tmp_path / "missing.toml")


def test_node_url_never_carries_the_password():
    u = url_for_nodes("postgresql+psycopg://lab:s3cret@db.example:5432/ctx")
    assert "s3cret" not in u and u.startswith("postgresql+psycopg://lab@db.example")
    assert url_for_nodes("sqlite:////shared/exp.db") == "sqlite:////shared/exp.db"


def test_bad_slurm_options_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--executor", "slurm", "--time", "0",
                        "--db", str(tmp_path / "e.db")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --time must be > 0 minutes, got 0"]
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "sweep", "-d", "synthetic", "-l", "hybrid",
                        "--executor", "pbs", "--db", str(tmp_path / "e.db")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--executor must be local or slurm" in r.stderr and "Traceback" not in r.stderr


def test_slurm_and_local_workers_share_the_loop_and_its_registry_backoff(tmp_path, monkeypatch):
    """One loop (ctxsim.runner.skeleton) for both executors: a registry error never ends the Slurm
    poller either; it backs off poll_s * 2^n, like the local worker."""
    from sqlalchemy.exc import OperationalError

    from ctxsim.runner.skeleton import WorkerLoop
    from ctxsim.runner.worker import LocalWorker

    assert SlurmWorker.run is LocalWorker.run is WorkerLoop.run
    reg = open_registry(str(tmp_path / "e.db"))
    said: list[str] = []
    w = SlurmWorker(reg, SlurmOptions(cluster="local", folder=str(tmp_path / "slurm")), poll_s=0.5, once=True,
                    on_message=said.append)
    calls = []

    def flaky_follow() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    waits: list[float] = []
    monkeypatch.setattr(w, "collect", flaky_follow)
    monkeypatch.setattr(w._stopping, "wait", lambda t=None: waits.append(t) or False)
    assert w.run() == 0  # nothing queued: the third pass drains and ends the loop
    assert len(calls) == 3 and waits == [1.0, 2.0]
    assert [m for m in said if "registry error" in m] == [
        "registry error (server closed the connection unexpectedly); retrying in 1 s",
        "registry error (server closed the connection unexpectedly); retrying in 2 s"]
    with reg.Session() as s:
        from ctxsim.registry.models import Worker

        assert s.get(Worker, w.id).status == "stopped"
    reg.dispose()


# ------------------------------------------------------------------ jobs through submitit's local executor


def _tiny(num_batches: int, seed: int, epochs: int = 1):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(
        epochs=epochs, device="cpu", num_workers=0, seed=seed, sampler_kw={"num_batches": num_batches})


def _row(reg, jid) -> Job:
    with reg.Session() as s:
        return s.get(Job, jid)


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
def test_local_executor_runs_cancels_preempts_and_resubmits_jobs(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    # the job to cancel runs until it is stopped (a probe of a million steps): the cancel cannot
    # lose a race with the job's end, however fast the machine
    until_stopped = probe_config(epochs=1, steps_per_epoch=1_000_000, sleep_s=0.01, label="cancel")
    ids = jobs.enqueue_many(reg, [_tiny(4, 0), until_stopped, _tiny(40, 2), _tiny(20, 3, epochs=2)],
                            executor="slurm", runs_root=tmp_path / "runs")
    done_id, cancel_id, preempt_id, crash_id = (i for i, _ in ids)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--executor", "slurm", "--slurm-cluster", "local",
            "--once", "--poll", "0.3", "--grace", "20", "--time", "30", "--device", "cpu", "--db", url]
    with open(log, "ab") as fh:
        worker = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # the compute-node task records itself on the job; wait for real training steps
        _wait(lambda: _row(reg, preempt_id).last_step >= 3 and _row(reg, preempt_id).worker_pid, 180,
              "the preempted job to train a few steps")
        task_pid = _row(reg, preempt_id).worker_pid
        os.kill(task_pid, signal.SIGUSR2)  # what Slurm sends before a time limit / on preemption
        _wait(lambda: _row(reg, cancel_id).last_step >= 2, 180, "the cancelled job to start training")
        assert jobs.cancel(reg, cancel_id) == "cancel_requested"
        _wait(lambda: (Path(_row(reg, crash_id).run_dir) / "checkpoint.pt").exists(), 180,
              "the crashed job's first epoch checkpoint")
        os.kill(_row(reg, crash_id).worker_pid, signal.SIGKILL)  # the node task dies: no settling
        rc = worker.wait(timeout=300)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 0, text
    assert "Traceback" not in text, text

    rows = {j: _row(reg, j) for j in (done_id, cancel_id, preempt_id)}
    assert {j: r.status for j, r in rows.items()} == {done_id: "done", cancel_id: "cancelled", preempt_id: "done"}, \
        [(r.id, r.status, r.error) for r in rows.values()]
    assert all(r.slurm_id and r.executor == "slurm" and r.attempts == 1 for r in rows.values())
    crashed = _row(reg, crash_id)
    assert (crashed.status, crashed.attempts, crashed.last_step) == ("done", 2, 40), crashed.error
    assert rows[cancel_id].error.startswith("cancelled by request")
    assert rows[cancel_id].last_step < 1_000_000
    assert rows[done_id].last_step == 4 and rows[preempt_id].last_step == 40
    with reg.Session() as s:
        kinds = list(s.scalars(select(JobEvent.kind).where(JobEvent.job_id == preempt_id)))
        n_loss = s.scalar(select(func.count()).select_from(Metric)
                          .where(Metric.job_id == preempt_id, Metric.key == "train/loss"))
    assert kinds.count("slurm_submitted") == 1  # requeued in place: the same Slurm job, the same attempt
    assert kinds.count("slurm_requeue") == 1 and kinds.count("slurm_start") == 2
    assert n_loss == 40  # every step once: nothing lost, nothing duplicated
    # the second start resumed from the checkpoint the preempted process wrote mid-epoch
    events = read_events(Path(rows[preempt_id].run_dir) / "events.jsonl")
    starts = [e.to_dict() for e in events if e.kind == "start"]
    stopped = [e.to_dict() for e in events if e.kind == "stopped"]
    assert len(starts) == 2 and len(stopped) == 1
    assert starts[1]["resumed"] and starts[1]["step"] == stopped[0]["step"] > 0
    assert 0 < stopped[0]["step"] < 40
    # the killed task: the poller saw its Slurm job end unsettled, re-queued it (an attempt) and
    # submitted a new Slurm job, which resumed from the end of epoch 1
    with reg.Session() as s:
        kinds = list(s.scalars(select(JobEvent.kind).where(JobEvent.job_id == crash_id)))
        n_loss = s.scalar(select(func.count()).select_from(Metric)
                          .where(Metric.job_id == crash_id, Metric.key == "train/loss"))
    assert kinds.count("slurm_submitted") == 2 and kinds.count("requeued") == 1
    assert n_loss == 40
    starts = [e.to_dict() for e in read_events(Path(crashed.run_dir) / "events.jsonl") if e.kind == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] and starts[1]["start_epoch"] == 1
    reg.dispose()
