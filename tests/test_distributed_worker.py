"""A job asking for 2 GPUs is launched by the worker under torchrun (2 processes; gloo on CPU here:
the GPU ids are only labels without CUDA): rank 0 alone reports to the registry and writes the run
directory's files; then a cancel stops both ranks at the same step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric
from ctxsim.train.events import read_events


def _cfg(num_batches: int, seed: int):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(
        epochs=1, device="cpu", num_workers=0, seed=seed, sampler_kw={"num_batches": num_batches},
        model={"bn_mode": "eval_stats"})


def _row(reg, jid) -> Job:
    with reg.Session() as s:
        return s.get(Job, jid)


@pytest.mark.slow
def test_worker_runs_a_two_gpu_job_under_torchrun_and_cancels_one(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    done_id = jobs.enqueue(reg, _cfg(3, 0), n_gpus=2, runs_root=tmp_path / "runs")
    cancel_id = jobs.enqueue(reg, _cfg(400, 1), n_gpus=2, runs_root=tmp_path / "runs")
    log = tmp_path / "worker.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--gpus", "0,1", "--device", "cpu", "--once",
            "--poll", "0.2", "--grace", "30", "--db", url]
    with open(log, "ab") as fh:
        w = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _row(reg, cancel_id).last_step < 3:
            assert time.monotonic() < deadline and w.poll() is None, log.read_text()
            time.sleep(0.2)
        assert jobs.cancel(reg, cancel_id) == "cancel_requested"
        rc = w.wait(timeout=240)
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 0, text
    done, cancelled = _row(reg, done_id), _row(reg, cancel_id)
    assert (done.status, done.gpus, done.attempts) == ("done", "0,1", 1), done.error
    assert cancelled.status == "cancelled", (cancelled.status, cancelled.error)
    out = (Path(done.run_dir) / "stdout.log").read_text()
    assert out.count(f"job {done_id} attempt 1 pid") == 2  # two ranks ran
    with reg.Session() as s:
        n_loss = s.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == done_id,
                                                                          Metric.key == "train/loss"))
        kinds = list(s.scalars(select(JobEvent.kind).where(JobEvent.job_id == done_id)))
    # one "start" from rank 0's sink; "done" twice: the sink's training event and the job's status
    assert n_loss == 3 and kinds.count("start") == 1 and kinds.count("done") == 2, kinds
    ev = read_events(Path(done.run_dir) / "events.jsonl")
    assert [e.kind for e in ev].count("start") == 1 and ev[-1].kind == "done"  # only rank 0 wrote events
    # the cancelled run stopped both ranks at one step and rank 0 checkpointed it there
    ev = read_events(Path(cancelled.run_dir) / "events.jsonl")
    stopped = [e for e in ev if e.kind == "stopped"]
    assert len(stopped) == 1 and 3 <= stopped[0].data["step"] < 400
    assert (Path(cancelled.run_dir) / "checkpoint.pt").exists()
    reg.dispose()
