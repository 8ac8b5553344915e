"""A fixed, seeded registry for the dashboard tests and snapshots (no clocks, no random ids).

Jobs, workers and metric points are written through the ORM and the RegistrySink with fixed
timestamps; the dashboard gets ``FIXED_NOW`` as its clock.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

from ctxsim.registry.db import Registry, open_registry
from ctxsim.registry.models import Job, JobEvent, Tag, Worker
from ctxsim.registry.sink import RegistrySink
from ctxsim.train.events import Event

FIXED_NOW = datetime(2026, 1, 15, 12, 0, 0)
T0 = FIXED_NOW - timedelta(hours=6)


def fixed_clock() -> datetime:
    return FIXED_NOW


def _job(id, name, dataset, loss, res, status, epoch, total, **kw) -> Job:
    cfg = {"dataset": dataset, "loss": loss, "resolution": res, "epochs": total, "seed": 0, "lr": 8e-5,
           "batch_size": 128, "embedding_size": 512}
    return Job(id=id, name=name, dataset=dataset, loss=loss, resolution=res, seed=0,
               config_json=json.dumps(cfg, sort_keys=True), config_hash=f"{id:064x}", status=status,
               epoch=epoch, total_epochs=total, created_at=T0 + timedelta(minutes=id), **kw)


def _train(sink: RegistrySink, epochs: int, steps_per_epoch: int, eval_every: int, r1_final: float,
           phase: float) -> None:
    """Deterministic loss / R@1 curves shaped like a real run (decaying loss, saturating R@1)."""
    step = 0
    t = T0.timestamp()
    for e in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            ctx = 0.9 * math.exp(-step / 120) + 0.25 + 0.02 * math.sin(step / 3 + phase)
            con = 0.5 * math.exp(-step / 200) + 0.10 + 0.01 * math.cos(step / 5 + phase)
            reg = 0.01 * math.exp(-step / 80)
            sink.emit(Event("step", {"epoch": e, "step": step, "loss": ctx + con + reg,
                                     "terms": {"ctx": ctx, "con": con, "reg": reg}, "lr": 8e-5}, t + step))
        sink.emit(Event("epoch", {"epoch": e, "loss": 1.2 * math.exp(-e / 6) + 0.35, "seconds": 60.0}, t + step))
        if e % eval_every == 0:
            r1 = r1_final * (1 - 0.35 * math.exp(-e / 5))
            sink.emit(Event("eval", {"epoch": e, "metrics": {"R@1": r1, "R@2": min(1.0, r1 + 0.1),
                                                             "MAP@R": r1 * 0.4}, "split": "test"}, t + step))
    sink.flush()


def build_seeded_registry(path: str | Path) -> Registry:
    """Creates the fixed test registry at ``path`` (a SQLite file) and returns it open."""
    reg = open_registry(path)
    from ctxsim.baselines import ensure_baselines

    ensure_baselines(reg)
    with reg.begin() as s:
        s.add_all([
            Worker(id="gpu01-w1", host="gpu01", pid=4242, gpus="0,1,2,3", executor="local",
                   started_at=T0, heartbeat_at=FIXED_NOW - timedelta(seconds=5), status="alive"),
            Worker(id="gpu02-w1", host="gpu02", pid=777, gpus="0,1", executor="local",
                   started_at=T0, heartbeat_at=FIXED_NOW - timedelta(minutes=12), status="alive"),
        ])
        s.add_all([
            _job(1, "cub-ref", "cub", "hybrid", 256, "done", 20, 20, started_at=T0,
                 finished_at=T0 + timedelta(hours=2, minutes=5), exit_code=0, gpus="0",
                 worker_id="gpu01-w1", run_dir="/nonexistent/ctxsim-runs/00001-cub-hybrid-256", attempts=1),
            _job(2, "cars-live", "cars", "hybrid", 256, "running", 12, 20,
                 started_at=FIXED_NOW - timedelta(minutes=47, seconds=30),
                 heartbeat_at=FIXED_NOW - timedelta(seconds=4), gpus="1", worker_id="gpu01-w1",
                 worker_host="gpu01", run_dir="/nonexistent/ctxsim-runs/00002-cars-hybrid-256", attempts=1),
            _job(3, "cub-contrastive", "cub", "contrastive", 224, "failed", 3, 20, started_at=T0,
                 finished_at=T0 + timedelta(minutes=9), exit_code=1, attempts=3,
                 error="DataError: corrupt image CUB_200_2011/images/001.Black_footed_Albatross/x.jpg"),
            _job(4, None, "sop", "ms_miner", 224, "queued", 0, 20, priority=5),
            _job(5, "cub-pa", "cub", "proxy_anchor", 224, "queued", 0, 20, priority=0),
            _job(6, "inshop-lost", "inshop", "hybrid", 256, "running", 4, 20,
                 started_at=FIXED_NOW - timedelta(hours=1), heartbeat_at=FIXED_NOW - timedelta(minutes=12),
                 gpus="0", worker_id="gpu02-w1", worker_host="gpu02", attempts=1),
            _job(7, "digits-smoke", "digits", "hybrid", 256, "cancelled", 1, 5, started_at=T0,
                 finished_at=T0 + timedelta(minutes=1)),
        ])
        s.add(Tag(job_id=1, tag="paper"))
        s.add(Tag(job_id=2, tag="paper"))
        s.add(JobEvent(job_id=2, time=FIXED_NOW - timedelta(minutes=47, seconds=30), kind="claimed",
                       message="attempt 1 by gpu01-w1 on GPUs 1"))
        # job 3: attempt 1 lost its worker (5 minutes), attempt 2 failed on a corrupt image (9 minutes)
        s.add(JobEvent(job_id=3, time=T0 - timedelta(minutes=30), kind="claimed", message="attempt 1 by gpu02-w1"))
        s.add(JobEvent(job_id=3, time=T0 - timedelta(minutes=25), kind="requeued",
                       message="requeued: no heartbeat for 65 s from gpu02-w1"))
        s.add(JobEvent(job_id=3, time=T0, kind="claimed", message="attempt 2 by gpu01-w1"))
        s.add(JobEvent(job_id=3, time=T0 + timedelta(minutes=9), kind="failed", message="DataError: corrupt image"))
    _train(RegistrySink(reg, 1), epochs=20, steps_per_epoch=10, eval_every=5, r1_final=0.6905, phase=0.0)
    _train(RegistrySink(reg, 2), epochs=12, steps_per_epoch=10, eval_every=4, r1_final=0.872, phase=1.0)
    _train(RegistrySink(reg, 3), epochs=3, steps_per_epoch=10, eval_every=10, r1_final=0.5, phase=2.0)
    _train(RegistrySink(reg, 6), epochs=4, steps_per_epoch=10, eval_every=2, r1_final=0.88, phase=3.0)
    # the sink set epoch/last_step from the events; restore the rows' fixed progress
    with reg.begin() as s:
        for jid, ep in ((1, 20), (2, 12), (3, 3), (6, 4)):
            s.get(Job, jid).epoch = ep
    return reg


def fill_paper_cells(reg: Registry) -> None:
    """A few cells of the 224 paper table: cub/hybrid three comparable seeds, cub/triplet queued,
    cars/hybrid running, cars/triplet one seed, cars/contrastive a tiny (not comparable) run."""
    from test_comparability import add_run, reference_fingerprint

    from ctxsim.train.configure import configure
    from ctxsim.train.recipes import recipe

    for seed, r1 in ((0, 0.70), (1, 0.72), (2, 0.74)):
        add_run(reg, recipe("cub", "hybrid", 224).with_overrides(seed=seed), r1,
                fingerprint=reference_fingerprint("cub"))
    add_run(reg, recipe("cub", "triplet", 224), 0.0, status="queued")
    add_run(reg, recipe("cars", "hybrid", 224), 0.0, status="running")
    add_run(reg, recipe("cars", "triplet", 224), 0.88, fingerprint=reference_fingerprint("cars"))
    add_run(reg, configure("cars", "contrastive", 224, sets=["model.arch=tiny"]), 0.5,
            fingerprint=reference_fingerprint("cars"))
