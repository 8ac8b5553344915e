"""A job's history read from its events: every attempt (when it ran, how it ended and why), time
summed over attempts, and the configs of many jobs at once (the dashboard's search).

The jobs row keeps only the current attempt (``started_at`` restarts, ``error`` is overwritten by
a retry or a cancel); the events keep every one, so history is rebuilt from them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable, Optional

from sqlalchemy import select

from ctxsim.registry.db import Registry
from ctxsim.registry.models import EventKind, Job, JobEvent

START_KINDS = (EventKind.CLAIMED,)
END_KINDS = ("done", "failed", "cancelled", "requeued")
OTHER_KINDS = ("retry", "queued")


def attempts_from_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Attempts in order: ``{"start", "end", "outcome", "message"}`` (``end``/``outcome`` None while
    an attempt runs). A cancel or failure outside an attempt (``cancelled while queued``) is an entry
    with ``start`` None, so a reason is never lost."""
    out: list[dict[str, Any]] = []
    open_: Optional[dict[str, Any]] = None
    for e in sorted(events, key=lambda e: (e["time"] or datetime.min, e.get("id") or 0)):
        kind = e["kind"]
        if kind in START_KINDS:
            open_ = {"start": e["time"], "end": None, "outcome": None, "message": e.get("message") or ""}
            out.append(open_)
        elif kind in END_KINDS:
            if open_ is None:
                out.append({"start": None, "end": e["time"], "outcome": kind, "message": e.get("message") or ""})
            else:
                open_.update(end=e["time"], outcome=kind, message=e.get("message") or open_["message"])
                open_ = None
    return out


def prior_elapsed_s(attempts: list[dict[str, Any]], current_start: Optional[datetime]) -> float:
    """Seconds run by the attempts that ended before ``current_start`` (all of them when None)."""
    total = 0.0
    for a in attempts:
        if a["start"] is None or a["end"] is None:
            continue
        if current_start is not None and a["start"] >= current_start:
            continue
        total += max(0.0, (a["end"] - a["start"]).total_seconds())
    return total


def job_attempts(reg: Registry, job_ids: Optional[Iterable[int]] = None) -> dict[int, list[dict[str, Any]]]:
    """Each job's attempts (``attempts_from_events``), for ``job_ids`` or every job."""
    et = JobEvent.__table__
    q = select(et.c.job_id, et.c.id, et.c.time, et.c.kind, et.c.message).where(
        et.c.kind.in_(START_KINDS + END_KINDS)).order_by(et.c.id)
    if job_ids is not None:
        q = q.where(et.c.job_id.in_(list(job_ids)))
    by_job: dict[int, list[dict[str, Any]]] = {}
    with reg.engine.connect() as c:
        for jid, eid, time, kind, message in c.execute(q):
            by_job.setdefault(jid, []).append({"id": eid, "time": time, "kind": kind, "message": message})
    return {jid: attempts_from_events(evs) for jid, evs in by_job.items()}


def job_configs(reg: Registry, job_ids: Optional[Iterable[int]] = None) -> dict[int, dict[str, Any]]:
    """Each job's parsed config (``{}`` when it is not valid JSON)."""
    jt = Job.__table__
    q = select(jt.c.id, jt.c.config_json)
    if job_ids is not None:
        q = q.where(jt.c.id.in_(list(job_ids)))
    out: dict[int, dict[str, Any]] = {}
    with reg.engine.connect() as c:
        for jid, text in c.execute(q):
            try:
                cfg = json.loads(text) if text else {}
            except ValueError:
                cfg = {}
            out[jid] = cfg if isinstance(cfg, dict) else {}
    return out


def job_events_page(reg: Registry, job_id: int, limit: int = 200, before_id: Optional[int] = None,
                    after_id: Optional[int] = None) -> list[dict[str, Any]]:
    """Up to ``limit`` events of a job, newest first: older than ``before_id`` (paging back: pass
    the smallest id shown) and newer than ``after_id`` (following: pass the largest id shown, with
    a large limit, so no event between two polls is skipped)."""
    et = JobEvent.__table__
    q = select(et.c.id, et.c.time, et.c.kind, et.c.message).where(et.c.job_id == job_id)
    if before_id is not None:
        q = q.where(et.c.id < before_id)
    if after_id is not None:
        q = q.where(et.c.id > after_id)
    q = q.order_by(et.c.id.desc()).limit(limit)
    with reg.engine.connect() as c:
        return [{"id": i, "time": t, "kind": k, "message": m} for i, t, k, m in c.execute(q)]


def jobs_with_config(reg: Registry, config_hash: str) -> list[dict[str, Any]]:
    """The jobs (any status, newest first) whose config has this hash: ``id``, ``name``, ``status``, ``seed``."""
    jt = Job.__table__
    q = select(jt.c.id, jt.c.name, jt.c.status, jt.c.seed).where(jt.c.config_hash == config_hash) \
        .order_by(jt.c.id.desc())
    with reg.engine.connect() as c:
        return [{"id": i, "name": n, "status": st, "seed": sd} for i, n, st, sd in c.execute(q)]


def used_seeds(reg: Registry, dataset: str, loss: str, resolution: Optional[int]) -> set[int]:
    """Seeds already used by jobs of this dataset/loss/resolution (to offer a new one)."""
    jt = Job.__table__
    q = select(jt.c.seed).where(jt.c.dataset == dataset, jt.c.loss == loss, jt.c.resolution == resolution)
    with reg.engine.connect() as c:
        return {s for (s,) in c.execute(q) if s is not None}
