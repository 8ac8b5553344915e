"""The job queue on the registry: enqueue (with dedupe and provenance), atomic claim, heartbeats,
the stale-job reaper, finish, cancel, retry and rm (docs/architecture.md §4.2).

Job life: queued -> running -> done | failed | cancelled. A running job that loses its heartbeat
goes back to queued (and resumes from its checkpoint) until it has used ``max_attempts`` claims.
Every write is one transaction retried on lock contention (``Registry.run``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.orm import Session

from ctxsim.errors import JobNotFoundError, JobStateError
from ctxsim.registry.db import Registry
from ctxsim.registry.models import EventKind, Job, JobEvent, JobStatus, Tag, Worker, utcnow
from ctxsim.registry.rundirs import run_folder
from ctxsim.registry.states import Executor

JOBS = Job.__table__
FOREGROUND = Executor.FOREGROUND
_HOST = socket.gethostname()


@dataclass(frozen=True)
class ClaimedJob:
    """What a claimer needs to run a job; ``attempt`` is the fencing token of this claim."""

    id: int
    config_json: str
    run_dir: str
    attempt: int
    n_gpus: int
    gpus: list[str]
    executor: str
    dataset: str
    loss: str


# ---------------------------------------------------------------- configs and enqueue


def config_fields(cfg: Any) -> dict[str, Any]:
    """Job columns derived from a config: a ``RunConfig`` (to_json/config_hash) or a plain dict.

    A dict config is a non-training job kind (``{"kind": "probe", ...}``, see ctxsim.runner.probe).
    """
    if isinstance(cfg, dict):
        text = json.dumps(cfg, sort_keys=True)
        d = cfg
        h = hashlib.sha256(text.encode()).hexdigest()
    else:
        text = cfg.to_json()
        d = json.loads(text)
        h = cfg.config_hash()
    return {
        "config_json": text,
        "config_hash": h,
        "dataset": str(d.get("dataset", d.get("kind", "?"))),
        "loss": str(d.get("loss", "-")),
        "resolution": d.get("resolution"),
        "seed": d.get("seed"),
        "total_epochs": d.get("epochs"),
    }


def default_runs_root(reg: Registry) -> Path:
    """``$CTXSIM_RUNS``, else ``runs/`` beside a SQLite registry file, else ``./runs``."""
    env = os.environ.get("CTXSIM_RUNS")
    if env:
        return Path(env).expanduser().absolute()
    p = reg.sqlite_path
    return (p.parent if p is not None else Path.cwd()) / "runs"


def _enqueue_one(
    s: Session, reg: Registry, cfg: Any, name: Optional[str], tags: Iterable[str], priority: int,
    executor: str, n_gpus: int, max_attempts: int, force: bool, runs_root: Optional[Path],
    prov: dict[str, Any], run_dir: Optional[str | os.PathLike] = None,
) -> tuple[int, bool]:
    f = config_fields(cfg)
    if not force:
        existing = s.scalar(
            select(Job.id).where(Job.config_hash == f["config_hash"], Job.status.in_(("queued", "running")))
            .order_by(Job.id).limit(1)
        )
        if existing is not None:
            return existing, False
    job = Job(
        name=name, dataset=f["dataset"], loss=f["loss"], resolution=f["resolution"], seed=f["seed"],
        config_json=f["config_json"], config_hash=f["config_hash"], status="queued", priority=priority,
        attempts=0, max_attempts=max_attempts, executor=executor, n_gpus=n_gpus,
        total_epochs=f["total_epochs"], **prov,
    )
    s.add(job)
    s.flush()
    if run_dir is not None:
        job.run_dir = str(Path(run_dir).absolute())
    else:
        job.run_dir = str(run_folder(runs_root or default_runs_root(reg), f, job.id))
    for t in sorted(set(tags)):
        s.add(Tag(job_id=job.id, tag=t))
    s.add(JobEvent(job_id=job.id, kind=EventKind.QUEUED, message=f"queued by {socket.gethostname()} pid {os.getpid()}",
                   payload={"host": socket.gethostname(), "pid": os.getpid(), "run_dir": job.run_dir}))
    return job.id, True


def enqueue_many(
    reg: Registry, cfgs: Sequence[Any], name: Optional[str] = None, tags: Iterable[str] = (),
    priority: int = 0, executor: str = "local", n_gpus: int = 0, max_attempts: int = 3,
    force: bool = False, runs_root: Optional[str | os.PathLike] = None,
    run_dirs: Optional[Sequence[Optional[str | os.PathLike]]] = None,
) -> list[tuple[int, bool]]:
    """Enqueues several configs in ONE transaction (all or nothing): [(job id, created)].

    An identical config (same hash) already queued or running is not queued twice: its id comes
    back with created=False, unless ``force``. ``run_dirs``: explicit run folders (None entries:
    the job's own folder, ``ctxsim.registry.rundirs.run_folder``).
    """
    from ctxsim.registry.provenance import provenance

    prov = provenance()
    tags = list(tags)
    root = Path(runs_root).absolute() if runs_root else None

    dirs = list(run_dirs) if run_dirs is not None else [None] * len(cfgs)

    def work(s: Session) -> list[tuple[int, bool]]:
        return [_enqueue_one(s, reg, c, name, tags, priority, executor, n_gpus, max_attempts, force, root, prov, d)
                for c, d in zip(cfgs, dirs)]

    return reg.run(work, what="enqueue")


def resume_stopped(reg: Registry, cfg: Any, run_dir: str | os.PathLike) -> Optional[int]:
    """The same run started again in the foreground after Ctrl-C: the latest cancelled foreground job
    of this config (same hash) in ``run_dir`` goes back to ``queued`` (as a foreground job) and its id
    is returned, so the resumed run continues that job's history; None when there is no such job."""
    f = config_fields(cfg)
    folder = str(Path(run_dir).absolute())

    def work(s: Session) -> Optional[int]:
        job = s.scalar(
            select(Job).where(Job.config_hash == f["config_hash"], Job.status == "cancelled",
                              Job.executor == FOREGROUND, Job.run_dir == folder)
            .order_by(Job.id.desc()).limit(1)
        )
        if job is None:
            return None
        job.status, job.cancel_requested, job.error, job.exit_code = "queued", False, None, None
        job.finished_at = job.started_at = job.heartbeat_at = None
        job.worker_id = job.worker_host = job.worker_pid = job.gpus = None
        s.add(JobEvent(job_id=job.id, kind=EventKind.RETRY, message=f"resumed in the foreground by {socket.gethostname()} "
                                                                f"pid {os.getpid()}",
                       payload={"resumed_in_foreground": True, "host": socket.gethostname(), "pid": os.getpid()}))
        return job.id

    return reg.run(work, what="resume job")


def enqueue(
    reg: Registry, cfg: Any, name: Optional[str] = None, tags: Iterable[str] = (), priority: int = 0,
    executor: str = "local", n_gpus: int = 0, max_attempts: int = 3, force: bool = False,
    runs_root: Optional[str | os.PathLike] = None, run_dir: Optional[str | os.PathLike] = None,
) -> int:
    """Queues one run; returns its job id (the existing one for an identical queued/running config).

    ``executor``: "local" (a worker picks it up), "foreground" (``run_foreground`` runs it now),
    or another executor name claimed by a matching worker (e.g. "slurm"). ``run_dir``: an explicit
    run folder (a checkpoint already there is resumed) instead of the job's own folder (``run_folder``).
    """
    return enqueue_many(reg, [cfg], name, tags, priority, executor, n_gpus, max_attempts, force, runs_root,
                        run_dirs=[run_dir] if run_dir is not None else None)[0][0]


# ---------------------------------------------------------------- claim and heartbeats


def _claimed(row: Any) -> ClaimedJob:
    return ClaimedJob(
        id=row.id, config_json=row.config_json, run_dir=row.run_dir, attempt=row.attempts,
        n_gpus=row.n_gpus, gpus=[g for g in (row.gpus or "").split(",") if g], executor=row.executor,
        dataset=row.dataset, loss=row.loss,
    )


_RETURNING = (JOBS.c.id, JOBS.c.config_json, JOBS.c.run_dir, JOBS.c.attempts, JOBS.c.n_gpus, JOBS.c.gpus,
              JOBS.c.executor, JOBS.c.dataset, JOBS.c.loss)


@functools.lru_cache(maxsize=128)
def _claim_stmt(free: tuple[str, ...], executors: tuple[str, ...], postgres: bool, by_id: bool):
    """The claim statement, built once per shape (SQLAlchemy then reuses its compiled form)."""
    if by_id:
        target = JOBS.c.id == bindparam("c_job")
    else:
        sub = (
            select(JOBS.c.id)
            .where(JOBS.c.status == "queued", JOBS.c.n_gpus <= len(free), JOBS.c.executor.in_(list(executors)))
            .order_by(JOBS.c.priority.desc(), JOBS.c.id)
            .limit(1)
        )
        if postgres:
            sub = sub.with_for_update(skip_locked=True)
        target = JOBS.c.id == sub.scalar_subquery()
    # the first n_gpus free ids, chosen inside the same statement
    gpus_expr = case({k: ",".join(free[:k]) for k in range(len(free) + 1)}, value=JOBS.c.n_gpus, else_=None)
    now = bindparam("c_now")
    return (
        update(JOBS)
        .where(target, JOBS.c.status == "queued")
        .values(
            status="running", attempts=JOBS.c.attempts + 1, worker_id=bindparam("c_worker"),
            worker_host=bindparam("c_host"), worker_pid=bindparam("c_pid"), gpus=gpus_expr,
            heartbeat_at=now, started_at=now, finished_at=None, exit_code=None, error=None, cancel_requested=False,
        )
        .returning(*_RETURNING)
    )


_EVENT_INSERT = insert(JobEvent.__table__)


def claim(
    reg: Registry, worker_id: str, free_gpus: Sequence[str] = (), executors: Sequence[str] = ("local",),
    host: Optional[str] = None, pid: Optional[int] = None, job_id: Optional[int] = None,
) -> Optional[ClaimedJob]:
    """Atomically takes the next queued job (highest priority, then oldest) that fits ``free_gpus``.

    One statement: UPDATE jobs SET status='running', attempts=attempts+1, gpus=<first n_gpus free
    ids>, ... WHERE id = (SELECT id ... LIMIT 1 [FOR UPDATE SKIP LOCKED]) AND status='queued'
    RETURNING ...; with ``job_id`` it takes that job only (foreground runs). None if nothing fits.
    """
    stmt = _claim_stmt(tuple(free_gpus), tuple(executors), reg.is_postgres, job_id is not None)
    now = utcnow()
    params = {"c_worker": worker_id, "c_host": host or _HOST, "c_pid": pid or os.getpid(), "c_now": now}
    if job_id is not None:
        params["c_job"] = job_id

    def work(s: Session) -> Optional[ClaimedJob]:
        row = s.execute(stmt, params).first()
        if row is None:
            return None
        s.execute(_EVENT_INSERT, {"job_id": row.id, "kind": EventKind.CLAIMED, "time": now, "message":
                                  f"attempt {row.attempts} by {worker_id}" + (f" on GPUs {row.gpus}" if row.gpus else ""),
                                  "payload": {"attempt": row.attempts, "worker_id": worker_id, "gpus": row.gpus}})
        return _claimed(row)

    return reg.run(work, what="claim")


def heartbeat_jobs(reg: Registry, worker_id: str, job_ids: Iterable[int]) -> dict[int, bool]:
    """Refreshes the heartbeat of the running jobs this worker owns.

    Returns {job id: cancel_requested} for the jobs it still owns; a job missing from the answer
    was taken away (reaped, removed): its process must be stopped.
    """
    ids = list(job_ids)
    if not ids:
        return {}
    stmt = (
        update(JOBS)
        .where(JOBS.c.id.in_(ids), JOBS.c.worker_id == worker_id, JOBS.c.status == "running")
        .values(heartbeat_at=utcnow())
        .returning(JOBS.c.id, JOBS.c.cancel_requested)
    )
    return reg.run(lambda s: {r.id: bool(r.cancel_requested) for r in s.execute(stmt)}, what="heartbeat")


def job_states(reg: Registry, job_ids: Iterable[int]) -> dict[int, tuple[str, Optional[str], int]]:
    """{job id: (status, worker_id, attempts)} for the jobs that exist."""
    ids = list(job_ids)
    if not ids:
        return {}
    q = select(JOBS.c.id, JOBS.c.status, JOBS.c.worker_id, JOBS.c.attempts).where(JOBS.c.id.in_(ids))
    with reg.Session() as s:
        return {r.id: (r.status, r.worker_id, r.attempts) for r in s.execute(q)}


@dataclass(frozen=True)
class FollowedSlurmJob:
    """A running Slurm job whose poller stopped heartbeating: another poller follows it for it."""

    id: int
    attempt: int
    worker_id: str
    slurm_id: str


def orphaned_slurm_jobs(reg: Registry, silent_for_s: float, exclude_worker: str) -> list[FollowedSlurmJob]:
    """Running Slurm jobs (with a Slurm id) whose claiming poller has not heartbeat for
    ``silent_for_s`` (killed, stopped or lost), other than ``exclude_worker``'s. Their compute-node
    tasks may still run and heartbeat them; ownership stays with the claim."""
    cutoff = utcnow() - timedelta(seconds=silent_for_s)
    workers = Worker.__table__
    live = select(workers.c.id).where(workers.c.status == "alive", workers.c.heartbeat_at >= cutoff)
    q = (select(JOBS.c.id, JOBS.c.attempts, JOBS.c.worker_id, JOBS.c.slurm_id)
         .where(JOBS.c.status == "running", JOBS.c.executor == Executor.SLURM.value, JOBS.c.slurm_id.is_not(None),
                JOBS.c.worker_id.is_not(None), JOBS.c.worker_id != exclude_worker, JOBS.c.worker_id.not_in(live))
         .order_by(JOBS.c.id))
    with reg.Session() as s:
        return [FollowedSlurmJob(r.id, r.attempts, r.worker_id, r.slurm_id) for r in s.execute(q)]


def count_running(reg: Registry, max_gpus: Optional[int] = None, executors: Sequence[str] = ("local",)) -> int:
    """Running jobs (needing at most ``max_gpus`` GPUs, of ``executors``): any of them comes back
    to the queue if its worker dies, so a draining worker waits for them."""
    q = select(func.count()).select_from(JOBS).where(JOBS.c.status == "running", JOBS.c.executor.in_(list(executors)))
    if max_gpus is not None:
        q = q.where(JOBS.c.n_gpus <= max_gpus)
    with reg.Session() as s:
        return int(s.scalar(q) or 0)


def register_worker(reg: Registry, worker_id: str, gpus: Sequence[str], executor: str = "local",
                    host: Optional[str] = None) -> None:
    """Creates or revives the Worker row of this daemon (``host``: default this machine's name)."""

    def work(s: Session) -> None:
        w = s.get(Worker, worker_id)
        now = utcnow()
        if w is None:
            s.add(Worker(id=worker_id, host=host or socket.gethostname(), pid=os.getpid(), gpus=",".join(gpus),
                         executor=executor, started_at=now, heartbeat_at=now, status="alive"))
        else:
            w.pid, w.gpus, w.executor, w.heartbeat_at, w.status = os.getpid(), ",".join(gpus), executor, now, "alive"

    reg.run(work, what="register worker")


def worker_heartbeat(reg: Registry, worker_id: str, status: str = "alive") -> None:
    stmt = update(Worker.__table__).where(Worker.__table__.c.id == worker_id).values(heartbeat_at=utcnow(), status=status)
    reg.run(lambda s: s.execute(stmt), what="worker heartbeat")


# ---------------------------------------------------------------- endings


@dataclass(frozen=True)
class JobRow:
    """What a job process reads of its own row before it starts."""

    id: int
    status: str
    attempts: int
    config_json: str
    run_dir: Optional[str]


def get_job(reg: Registry, job_id: int) -> Optional[JobRow]:
    """A job's status, attempt, config and run folder; None when there is no such job."""
    with reg.Session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        return JobRow(job.id, job.status, job.attempts, job.config_json, job.run_dir)


def mark_started(reg: Registry, job_id: int, attempt: int, worker_id: str, host: str, pid: int,
                 event_kind: str, message: str) -> Optional[str]:
    """Records where an owned, running claim (``attempt``/``worker_id``) now runs (host, pid, a fresh
    heartbeat) with one event; returns the job's run folder, or None when the claim is no longer
    its own (reaped, cancelled while pending, removed)."""
    stmt = (update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == "running", JOBS.c.attempts == attempt,
                   JOBS.c.worker_id == worker_id)
            .values(worker_host=host, worker_pid=pid, heartbeat_at=utcnow())
            .returning(JOBS.c.run_dir))

    def work(s: Session) -> Optional[str]:
        row = s.execute(stmt).first()
        if row is None:
            return None
        s.add(JobEvent(job_id=job_id, kind=event_kind, message=message))
        return row.run_dir

    return reg.run(work, what=f"start job {job_id}")


def set_slurm_id(reg: Registry, job_id: int, attempt: int, slurm_id: str) -> None:
    """Records the Slurm job id of an attempt (with a ``slurm_submitted`` event)."""
    stmt = update(JOBS).where(JOBS.c.id == job_id, JOBS.c.attempts == attempt).values(slurm_id=slurm_id)

    def work(s: Session) -> None:
        s.execute(stmt)
        s.add(JobEvent(job_id=job_id, kind=EventKind.SLURM_SUBMITTED,
                       message=f"attempt {attempt}: slurm job {slurm_id}"))

    reg.run(work, what=f"record slurm id of job {job_id}")


def add_event(reg: Registry, job_id: int, kind: str, message: str = "") -> None:
    reg.run(lambda s: s.add(JobEvent(job_id=job_id, kind=kind, message=message)), what="job event")


def finish(
    reg: Registry, job_id: int, status: JobStatus, attempt: Optional[int] = None, worker_id: Optional[str] = None,
    exit_code: Optional[int] = None, error: Optional[str] = None,
) -> bool:
    """Ends a running job as done/failed/cancelled; False if this claim no longer owns it.

    ``attempt``/``worker_id`` fence the write: a job re-queued and re-claimed meanwhile is left alone.
    """
    status = JobStatus(status)
    if not status.final:
        raise ValueError(f"finish() ends a job as done, failed or cancelled, not {status}")
    conds = [JOBS.c.id == job_id, JOBS.c.status == JobStatus.RUNNING]
    if attempt is not None:
        conds.append(JOBS.c.attempts == attempt)
    if worker_id is not None:
        conds.append(JOBS.c.worker_id == worker_id)
    stmt = update(JOBS).where(*conds).values(status=status, finished_at=utcnow(), exit_code=exit_code, error=error)

    def work(s: Session) -> bool:
        n = s.execute(stmt).rowcount
        if n:
            s.add(JobEvent(job_id=job_id, kind=status, message=error or (f"exit code {exit_code}" if exit_code is not None else ""),
                           payload={"exit_code": exit_code, "error": error}))
        return bool(n)

    return reg.run(work, what=f"mark job {job_id} {status}")


def requeue(
    reg: Registry, job_id: int, reason: str, attempt: Optional[int] = None, worker_id: Optional[str] = None,
    refund_attempt: bool = False,
) -> str:
    """Puts a running job back in the queue (or fails it once its attempts are used up).

    ``refund_attempt``: the stop was not the job's fault (worker shutdown), so the claim is not
    counted. Returns the new status ("queued" | "failed" | "cancelled" | "" if not owned).
    """

    def work(s: Session) -> str:
        q = select(Job).where(Job.id == job_id, Job.status == "running")
        if attempt is not None:
            q = q.where(Job.attempts == attempt)
        if worker_id is not None:
            q = q.where(Job.worker_id == worker_id)
        job = s.scalar(q)
        if job is None:
            return ""
        return _requeue_row(s, job, reason, refund_attempt)

    return reg.run(work, what=f"requeue job {job_id}")


def _requeue_row(s: Session, job: Job, reason: str, refund_attempt: bool = False) -> str:
    if refund_attempt:
        job.attempts = max(0, job.attempts - 1)
    if job.cancel_requested:
        status, msg = "cancelled", f"cancelled ({reason})"
    elif job.executor == FOREGROUND:
        status, msg = "failed", f"{reason}; foreground run lost (`ctxsim retry {job.id}` queues it for a worker)"
    elif job.attempts >= job.max_attempts:
        status, msg = "failed", f"{reason}; gave up after {job.attempts} attempt(s) (max_attempts={job.max_attempts})"
    else:
        status, msg = "queued", f"requeued: {reason}"
    job.status = status
    job.worker_id = job.worker_host = job.worker_pid = job.gpus = None
    if status == "queued":
        job.started_at = job.heartbeat_at = None
    else:
        job.finished_at = utcnow()
        job.error = msg
    s.add(JobEvent(job_id=job.id, kind=EventKind.REQUEUED if status == "queued" else status, message=msg,
                   payload={"status": status, "reason": msg}))
    return status


def reap(reg: Registry, expiry_s: float) -> list[tuple[int, str]]:
    """Re-queues running jobs whose heartbeat is older than ``expiry_s`` (their worker died).

    Returns [(job id, new status)]. Workers silent for as long are marked "lost".
    """
    cutoff = utcnow() - timedelta(seconds=expiry_s)

    def work(s: Session) -> list[tuple[int, str]]:
        q = select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
        if reg.is_postgres:
            q = q.with_for_update(skip_locked=True)
        out = []
        for job in s.scalars(q):
            age = (utcnow() - job.heartbeat_at).total_seconds() if job.heartbeat_at else float("inf")
            out.append((job.id, _requeue_row(s, job, f"no heartbeat for {age:.0f} s from {job.worker_id}")))
        s.execute(update(Worker.__table__).where(Worker.__table__.c.status == "alive",
                                                 Worker.__table__.c.heartbeat_at < cutoff).values(status="lost"))
        return out

    return reg.run(work, what="reap stale jobs")


# ---------------------------------------------------------------- user operations


def _get(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id}")
    return job


def cancel(reg: Registry, job_id: int) -> str:
    """queued -> cancelled at once; running -> cancel_requested (its worker stops it). New state."""

    def work(s: Session) -> str:
        job = _get(s, job_id)
        if job.status == "queued":
            job.status, job.finished_at, job.error = "cancelled", utcnow(), "cancelled before it started"
            s.add(JobEvent(job_id=job_id, kind=EventKind.CANCELLED, message="cancelled while queued",
                           payload={"while": "queued"}))
            return "cancelled"
        if job.status == "running":
            job.cancel_requested = True
            s.add(JobEvent(job_id=job_id, kind=EventKind.CANCEL_REQUESTED, message="", payload={"while": "running"}))
            return "cancel_requested"
        raise JobStateError(f"job {job_id} is {job.status}: nothing to cancel")

    return reg.run(work, what=f"cancel job {job_id}")


def retry(reg: Registry, job_id: int, reset_attempts: bool = True) -> None:
    """failed/cancelled -> queued again (same run dir: it resumes from its checkpoint).

    Attempts restart from 0 unless ``reset_attempts=False``; a lost foreground run goes to workers.
    """

    def work(s: Session) -> None:
        job = _get(s, job_id)
        if job.status not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {job.status}: only failed or cancelled jobs can be retried")
        job.status, job.cancel_requested, job.error, job.exit_code = "queued", False, None, None
        job.finished_at = job.started_at = job.heartbeat_at = None
        job.worker_id = job.worker_host = job.worker_pid = job.gpus = None
        if reset_attempts:
            job.attempts = 0
        if job.executor == FOREGROUND:
            job.executor = "local"
        s.add(JobEvent(job_id=job_id, kind=EventKind.RETRY, message="attempts reset" if reset_attempts else "attempts kept",
                       payload={"reset_attempts": bool(reset_attempts)}))

    reg.run(work, what=f"retry job {job_id}")


def set_priority(reg: Registry, job_id: int, priority: int, relative: bool = False) -> int:
    """Sets a queued job's priority (``relative``: adds to it); returns the previous priority.

    Workers claim the highest priority first, then the oldest; only a queued job can move.
    """

    def work(s: Session) -> int:
        job = _get(s, job_id)
        if job.status != "queued":
            raise JobStateError(f"job {job_id} is {job.status}: only queued jobs can be re-prioritised")
        old = job.priority or 0
        job.priority = old + int(priority) if relative else int(priority)
        s.add(JobEvent(job_id=job_id, kind=EventKind.PRIORITY, message=f"priority {old} -> {job.priority}",
                       payload={"previous": old, "priority": job.priority}))
        return old

    return reg.run(work, what=f"re-prioritise job {job_id}")


STOP_BOUND_S = 60.0  # how long ``rm(force=True)`` waits for a running job to stop before removing it


def wait_stopped(reg: Registry, job_id: int, timeout_s: float, poll_s: float = 0.2) -> bool:
    """Waits (at most ``timeout_s``) until job ``job_id`` is no longer running; True if it stopped
    (or is gone). Ctrl-C interrupts the wait at once (a KeyboardInterrupt, nothing written)."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        state = job_states(reg, [job_id]).get(job_id)
        if state is None or state[0] != "running":
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(poll_s, left))


STALE_OWNER_S = 30.0  # a running job whose heartbeat is older than this has no live process to wait for


def _has_live_owner(reg: Registry, job_id: int) -> bool:
    """Whether job ``job_id`` is running with a recent heartbeat (a process that can stop cleanly)."""
    with reg.Session() as s:
        row = s.execute(select(JOBS.c.status, JOBS.c.heartbeat_at).where(JOBS.c.id == job_id)).first()
    if row is None or row.status != "running" or row.heartbeat_at is None:
        return False
    return (utcnow() - row.heartbeat_at).total_seconds() < STALE_OWNER_S


def rm(reg: Registry, job_id: int, force: bool = False, purge: bool = False,
       stop_timeout_s: float = STOP_BOUND_S) -> Optional[str]:
    """Deletes a job's rows (metrics, summaries, events, tags too); running jobs need ``force``.

    With ``force`` a running job is first cancelled and waited for (at most ``stop_timeout_s``), so
    that its process stops cleanly (checkpoint, final writes) before its rows go; a process that is
    still running after the bound finds its job gone at its next heartbeat and stops then.
    ``purge`` also deletes its run directory, which is returned.
    """
    if force and stop_timeout_s > 0 and _has_live_owner(reg, job_id):
        try:
            cancel(reg, job_id)
        except JobStateError:  # it ended meanwhile
            pass
        wait_stopped(reg, job_id, stop_timeout_s)

    def work(s: Session) -> Optional[str]:
        job = _get(s, job_id)
        if job.status == "running" and not force:
            raise JobStateError(f"job {job_id} is running: cancel it first or use --force")
        run_dir = job.run_dir
        s.execute(delete(JOBS).where(JOBS.c.id == job_id))
        return run_dir

    run_dir = reg.run(work, what=f"remove job {job_id}")
    if purge and run_dir and Path(run_dir).exists():
        shutil.rmtree(run_dir)
    return run_dir


def insert_job_rows(reg: Registry, rows: list[dict[str, Any]]) -> None:
    """Bulk insert of prepared job rows (benchmarks, imports)."""
    reg.run(lambda s: s.execute(insert(JOBS), rows), what="insert jobs")
