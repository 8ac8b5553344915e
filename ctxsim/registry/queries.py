"""Read queries shared by the CLI and the dashboard, named after what they return.

All functions take an open ``Registry`` and return plain dicts/lists (no ORM objects escape),
so callers in threads never touch a session.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from sqlalchemy import or_, select

from ctxsim.registry.db import Registry
from ctxsim.registry.models import Job, Metric, Summary, Tag

JOB_COLUMNS = (
    "id", "name", "dataset", "loss", "resolution", "seed", "status", "priority", "attempts",
    "max_attempts", "epoch", "total_epochs", "last_step", "executor", "n_gpus", "gpus",
    "worker_id", "worker_host", "worker_pid", "slurm_id", "heartbeat_at", "created_at",
    "started_at", "finished_at", "exit_code", "error", "git_commit", "git_dirty", "run_dir",
    "config_hash",
)


def job_dict(job: Job) -> dict[str, Any]:
    return {c: getattr(job, c) for c in JOB_COLUMNS}


def runs_table(
    reg: Registry,
    status: Optional[Iterable[str]] = None,
    dataset: Optional[str] = None,
    loss: Optional[str] = None,
    resolution: Optional[int] = None,
    ids: Optional[Iterable[int]] = None,
    summary_keys: Iterable[str] = ("R@1", "MAP@R", "train/loss"),
    limit: Optional[int] = None,
    updated_since: Optional[Any] = None,
) -> list[dict[str, Any]]:
    """One dict per job (newest first): its columns, ``updated_at``, tags and the summaries of
    ``summary_keys``. Read with Core (no ORM objects: several times faster at 1,000 jobs).

    With ``updated_since`` only the jobs changed after it come back (incremental polls: poll with
    ``max(updated_at seen) - a few seconds`` and merge by id; removed jobs need a full read).
    """
    jt, st, tt = Job.__table__, Summary.__table__, Tag.__table__
    names = list(JOB_COLUMNS) + ["updated_at"]
    q = select(*[jt.c[c] for c in names]).order_by(jt.c.id.desc())
    if updated_since is not None:
        q = q.where(jt.c.updated_at > updated_since)
    if status:
        q = q.where(jt.c.status.in_(list(status)))
    if dataset:
        q = q.where(jt.c.dataset == dataset)
    if loss:
        q = q.where(jt.c.loss == loss)
    if resolution:
        q = q.where(jt.c.resolution == resolution)
    if ids is not None:
        q = q.where(jt.c.id.in_(list(ids)))
    if limit:
        q = q.limit(limit)
    keys = list(summary_keys)
    with reg.engine.connect() as c:
        rows = [dict(zip(names, r)) for r in c.execute(q)]
        if not rows:
            return []
        job_ids = [r["id"] for r in rows]
        narrow = any(x is not None and x != () for x in (updated_since, status, dataset, loss, resolution, ids, limit))
        sq = select(st.c.job_id, st.c.key, st.c.best, st.c.best_step, st.c.last, st.c.last_step)
        tq = select(tt.c.job_id, tt.c.tag)
        if narrow:  # otherwise every job is wanted: no id list to send
            sq, tq = sq.where(st.c.job_id.in_(job_ids)), tq.where(tt.c.job_id.in_(job_ids))
        if keys:
            sq = sq.where(st.c.key.in_(keys))
        summ: dict[int, dict[str, dict[str, Any]]] = {}
        for jid, key, best, best_step, last, last_step in c.execute(sq):
            summ.setdefault(jid, {})[key] = {"best": best, "best_step": best_step, "last": last, "last_step": last_step}
        tags: dict[int, list[str]] = {}
        for jid, tag in c.execute(tq):
            tags.setdefault(jid, []).append(tag)
    for d in rows:
        d["summaries"] = summ.get(d["id"], {})
        d["tags"] = sorted(tags.get(d["id"], []))
    return rows


def job_detail(reg: Registry, job_id: int) -> Optional[dict[str, Any]]:
    """A job's columns plus its config JSON, tags and all its summaries; None if absent."""
    with reg.Session() as s:
        j = s.get(Job, job_id)
        if j is None:
            return None
        d = job_dict(j)
        d["config_json"] = j.config_json
        d["versions_json"] = j.versions_json
        d["tags"] = sorted(t.tag for t in j.tags)
        d["summaries"] = {
            r.key: {"best": r.best, "best_step": r.best_step, "last": r.last, "last_step": r.last_step}
            for r in s.scalars(select(Summary).where(Summary.job_id == job_id))
        }
        return d


def metric_series(
    reg: Registry,
    job_id: int,
    keys: Optional[Iterable[str]] = None,
    since_step: Optional[dict[str, int]] = None,
) -> dict[str, list[tuple[int, float]]]:
    """Points of a job's series by key, ordered by step; keys without (new) points are left out.

    ``since_step`` maps key -> last step the caller already holds: only newer points of that key
    come back (each key has its own axis: global step for ``train/*``, epoch for eval metrics);
    keys absent from it come back whole. One indexed range read per key ((job, key, step) index).
    """
    mt = Metric.__table__
    with reg.engine.connect() as c:
        if keys is None:
            keys = [k for (k,) in c.execute(select(mt.c.key).where(mt.c.job_id == job_id).distinct())]
        out: dict[str, list[tuple[int, float]]] = {}
        for key in keys:
            q = select(mt.c.step, mt.c.value).where(mt.c.job_id == job_id, mt.c.key == key)
            if since_step and key in since_step:
                q = q.where(mt.c.step > since_step[key])
            pts = [(st, v) for st, v in c.execute(q.order_by(mt.c.step))]
            if pts:
                out[key] = pts
    return dict(sorted(out.items()))


def baselines_table(
    reg: Registry,
    dataset: Optional[str] = None,
    resolution: Optional[int] = None,
    metric: Optional[str] = None,
    kinds: Optional[Iterable[str]] = None,
) -> list[dict[str, Any]]:
    """Stored reference numbers (percent) with provenance, ordered by dataset, resolution, method, metric.

    ``resolution`` also matches rows stored without a resolution (numbers that apply to any).
    """
    from ctxsim.registry.models import Baseline

    q = select(Baseline).order_by(
        Baseline.dataset, Baseline.resolution, Baseline.method, Baseline.kind, Baseline.metric, Baseline.id
    )
    if dataset:
        q = q.where(Baseline.dataset == dataset)
    if resolution:
        q = q.where((Baseline.resolution == resolution) | Baseline.resolution.is_(None))
    if metric:
        q = q.where(Baseline.metric == metric)
    if kinds is not None:
        q = q.where(Baseline.kind.in_(list(kinds)))
    cols = ("id", "resolution", "dataset", "method", "metric", "value", "kind", "source", "origin")
    with reg.Session() as s:
        return [{c: getattr(b, c) for c in cols} for b in s.scalars(q)]


def job_configs(reg: Registry, job_ids: Iterable[int]) -> dict[int, str]:
    """job id -> its config JSON text."""
    ids = list(job_ids)
    if not ids:
        return {}
    with reg.Session() as s:
        return dict(s.execute(select(Job.id, Job.config_json).where(Job.id.in_(ids))).all())


def job_event_payloads(reg: Registry, job_ids: Iterable[int], kind: str) -> dict[int, list[Optional[dict[str, Any]]]]:
    """job id -> payloads of its events of one ``kind`` (e.g. EventKind.DONE), oldest first.

    A row written before schema v3 has no payload: None (unknown), never its message parsed.
    """
    from ctxsim.registry.models import JobEvent

    ids = list(job_ids)
    if not ids:
        return {}
    q = (
        select(JobEvent.job_id, JobEvent.payload)
        .where(JobEvent.job_id.in_(ids), JobEvent.kind == kind)
        .order_by(JobEvent.id)
    )
    out: dict[int, list[Optional[dict[str, Any]]]] = {}
    with reg.Session() as s:
        for jid, payload in s.execute(q):
            out.setdefault(jid, []).append(payload if isinstance(payload, dict) else None)
    return out


# ---- dashboard reads (TUI owner; the CLI may use them too) ------------------------------------
# (reference numbers keyed by ctxsim loss name need ctxsim.baselines: ctxsim.report.compare)


def workers_table(reg: Registry) -> list[dict[str, Any]]:
    """Every worker row (newest heartbeat first) with the ids of the jobs it is running."""
    from ctxsim.registry.models import Worker

    with reg.Session() as s:
        workers = list(s.scalars(select(Worker).order_by(Worker.heartbeat_at.desc(), Worker.id)))
        running: dict[str, list[int]] = {}
        for jid, wid in s.execute(
            select(Job.id, Job.worker_id).where(Job.status == "running", Job.worker_id.is_not(None))
        ):
            running.setdefault(wid, []).append(jid)
        return [
            {"id": w.id, "host": w.host, "pid": w.pid, "gpus": w.gpus, "executor": w.executor,
             "started_at": w.started_at, "heartbeat_at": w.heartbeat_at, "status": w.status,
             "jobs": sorted(running.get(w.id, []))}
            for w in workers
        ]


def queue_table(reg: Registry, recent_finished: int = 0) -> list[dict[str, Any]]:
    """Running jobs, then queued ones in claim order (priority highest first, then id), then the
    ``recent_finished`` most recently finished failed/cancelled jobs (candidates for retry).

    One SELECT, so one snapshot: with two, a job cancelled between them was listed twice."""
    active = Job.status.in_(("queued", "running"))
    cond = active
    if recent_finished:
        recent = (select(Job.id).where(Job.status.in_(("failed", "cancelled")))
                  .order_by(Job.finished_at.desc(), Job.id.desc()).limit(recent_finished))
        cond = or_(active, Job.id.in_(recent))
    with reg.Session() as s:
        jobs = [job_dict(j) for j in s.scalars(select(Job).where(cond))]
    live = [j for j in jobs if j["status"] in ("queued", "running")]
    done = [j for j in jobs if j["status"] not in ("queued", "running")]
    live.sort(key=lambda d: (d["status"] != "running", -(d["priority"] or 0), d["id"]))
    done.sort(key=lambda d: (d["finished_at"] is not None, d["finished_at"] or 0, d["id"]), reverse=True)
    return live + done


def job_events(reg: Registry, job_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The last ``limit`` lifecycle/log events of a job, oldest first."""
    from ctxsim.registry.models import JobEvent

    q = (select(JobEvent).where(JobEvent.job_id == job_id)
         .order_by(JobEvent.id.desc()).limit(limit))
    with reg.Session() as s:
        rows = [{"id": e.id, "time": e.time, "kind": e.kind, "message": e.message} for e in s.scalars(q)]
    return rows[::-1]


def runs_changes(
    reg: Registry, updated_since: Optional[Any] = None, metric_id_after: Optional[int] = None
) -> dict[str, Any]:
    """What an incremental poller needs to re-read only the jobs that changed.

    Returns ``ids`` (every job id), ``running`` (ids of running jobs), ``changed`` (ids whose row
    was updated at or after ``updated_since`` or that got metric points with id above
    ``metric_id_after``; empty when both are None) and the markers to pass next time:
    ``updated_at`` (newest jobs.updated_at) and ``metric_id`` (largest metrics.id). Take the
    markers before reading the rows so that a write in between is seen (again) next time.
    """
    from sqlalchemy import func

    with reg.Session() as s:
        max_upd = s.scalar(select(func.max(Job.updated_at)))
        max_mid = s.scalar(select(func.max(Metric.id)))
        ids = list(s.scalars(select(Job.id)))
        running = set(s.scalars(select(Job.id).where(Job.status == "running")))
        changed: set[int] = set()
        if updated_since is not None:
            changed |= set(s.scalars(select(Job.id).where(Job.updated_at >= updated_since)))
        if metric_id_after is not None and max_mid is not None and max_mid > metric_id_after:
            changed |= set(s.scalars(select(Metric.job_id).where(Metric.id > metric_id_after).distinct()))
    return {"ids": ids, "running": running, "changed": changed, "updated_at": max_upd, "metric_id": max_mid}
