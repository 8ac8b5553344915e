"""The queue with real training jobs (synthetic data, tiny model): a worker SIGKILLed mid-run, the
job re-queued after its heartbeat expires and resumed from checkpoint.pt by another worker."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select
from test_runner import job_row, start_worker, wait_for

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import JobEvent
from ctxsim.registry.queries import metric_series


def tiny_cfg(epochs: int, steps: int):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(epochs=epochs, max_steps_per_epoch=steps, num_workers=0,
                                                             device="cpu")


@pytest.mark.slow
def test_real_fit_killed_worker_resumes_from_checkpoint(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    epochs, steps = 3, 15
    jid = jobs.enqueue(reg, tiny_cfg(epochs, steps))
    a = start_worker(url, "--gpus", "", "--heartbeat-expiry", "4", log=tmp_path / "a.log")
    try:
        ckpt = Path(job_row(reg, jid).run_dir) / "checkpoint.pt"
        wait_for(ckpt.exists, 240, "the first epoch's checkpoint", every=0.05)
        assert job_row(reg, jid).status == "running", "the job ended before the worker could be killed"
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        b = start_worker(url, "--gpus", "", "--once", "--heartbeat-expiry", "4", log=tmp_path / "b.log")
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    job = job_row(reg, jid)
    run_log = (Path(job.run_dir) / "stdout.log").read_text()
    assert (job.status, job.attempts) == ("done", 2), run_log[-3000:]
    assert (Path(job.run_dir) / "checkpoint.pt").exists()
    starts = [json.loads(line) for line in (Path(job.run_dir) / "events.jsonl").read_text().splitlines()
              if '"kind": "start"' in line]
    assert len(starts) == 2 and starts[1]["start_epoch"] >= 1  # the second attempt resumed
    series = metric_series(reg, jid)
    spe = starts[0]["steps_per_epoch"]  # the synthetic set may hold fewer batches than max_steps_per_epoch
    assert 0 < spe <= steps
    assert [st for st, _ in series["train/loss"]] == list(range(1, epochs * spe + 1))  # no gap, no duplicate
    assert [st for st, _ in series["R@1"]] == list(range(1, epochs + 1))
    with reg.Session() as s:
        kinds = [e.kind for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid))]
    assert kinds.count("claimed") == 2 and "requeued" in kinds and kinds[-1] == "done"
