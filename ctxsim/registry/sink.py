"""RegistrySink: the training loop's events into the registry, batched and idempotent (DESIGN §4).

Points (``events.metric_points``) are buffered and written every ``flush_every_s`` seconds or
``flush_every_n`` points in one transaction: INSERT ... ON CONFLICT (job_id, key, step) DO NOTHING
RETURNING, so a resumed job that replays steps never duplicates them (the first value of a step
is kept) and only really new points are folded into the summaries. The same transaction maintains the
Summary rows (best and last per key) and the job's epoch/total_epochs/last_step. Lifecycle events
(start, checkpoint, done, failed, log) also land in the events table. Epoch-level events
(epoch, eval, checkpoint, done, failed) flush at once, so everything before a checkpoint is stored
before a crash can happen after it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ctxsim.registry.db import Registry
from ctxsim.registry.models import Job, JobEvent, Metric, Summary
from ctxsim.train.events import Event, metric_points

log = logging.getLogger(__name__)

LIFECYCLE_KINDS = ("start", "checkpoint", "stopped", "done", "failed", "log")
FLUSH_NOW_KINDS = ("epoch", "eval", "checkpoint", "stopped", "done", "failed")


def lower_is_better(key: str) -> bool:
    """Losses (``train/*``, ``epoch/loss``, anything named *loss*) are minimised; metrics maximised."""
    return key.startswith("train/") or key.startswith("epoch/") or "loss" in key.lower()


def _insert_ignore(reg: Registry, table: Any):
    """INSERT ... ON CONFLICT DO NOTHING on the (job_id, key, step) unique key, per dialect."""
    name = reg.engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return None
    return dialect_insert(table).on_conflict_do_nothing(index_elements=["job_id", "key", "step"])


def write_points(reg: Registry, s: Session, job_id: int, points: list[tuple[str, int, float, float]]) -> None:
    """Stores (key, step, value, time) points of one job and folds them into its summaries."""
    if not points:
        return
    table = Metric.__table__
    rows = [{"job_id": job_id, "key": k, "step": st, "value": v, "time": t} for k, st, v, t in points]
    stmt = _insert_ignore(reg, table)
    if stmt is not None:
        # RETURNING gives back only the rows really inserted: replayed points must not touch summaries
        new = [(r.key, r.step, r.value, 0.0) for r in s.execute(stmt.returning(table.c.key, table.c.step, table.c.value), rows)]
    else:  # other dialects: skip what is there already
        keys = {r["key"] for r in rows}
        have = set(s.execute(select(table.c.key, table.c.step).where(table.c.job_id == job_id, table.c.key.in_(keys))))
        rows = [r for r in rows if (r["key"], r["step"]) not in have]
        if rows:
            s.execute(insert(table), rows)
        new = [(r["key"], r["step"], r["value"], 0.0) for r in rows]
    if new:
        _fold_summaries(s, job_id, new)


def _fold_summaries(s: Session, job_id: int, points: list[tuple[str, int, float, float]]) -> None:
    # per key: best of the batch and the point with the highest step
    batch: dict[str, dict[str, Any]] = {}
    for k, st, v, _t in points:
        b = batch.get(k)
        if b is None:
            batch[k] = {"best": v, "best_step": st, "last": v, "last_step": st}
            continue
        better = v < b["best"] if lower_is_better(k) else v > b["best"]
        if better:
            b["best"], b["best_step"] = v, st
        if st >= b["last_step"]:
            b["last"], b["last_step"] = v, st
    existing = {r.key: r for r in s.scalars(select(Summary).where(Summary.job_id == job_id, Summary.key.in_(list(batch))))}
    for k, b in batch.items():
        r = existing.get(k)
        if r is None:
            s.add(Summary(job_id=job_id, key=k, **b))
            continue
        better = b["best"] < r.best if lower_is_better(k) else b["best"] > r.best
        if better:
            r.best, r.best_step = b["best"], b["best_step"]
        if b["last_step"] > r.last_step:
            r.last, r.last_step = b["last"], b["last_step"]


class RegistrySink:
    """EventSink writing a job's metric points, summaries, progress and lifecycle to the registry."""

    def __init__(self, reg: Registry, job_id: int, flush_every_s: float = 1.0, flush_every_n: int = 500) -> None:
        self.reg = reg
        self.job_id = job_id
        self.flush_every_s = flush_every_s
        self.flush_every_n = flush_every_n
        self._points: list[tuple[str, int, float, float]] = []
        self._events: list[tuple[str, str, float]] = []
        self._progress: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.closed = False

    def emit(self, event: Event) -> None:
        with self._lock:
            for k, st, v in metric_points(event):
                self._points.append((k, st, v, event.time))
            d = event.data
            if event.kind == "start":
                if d.get("epochs") is not None:
                    self._progress["total_epochs"] = int(d["epochs"])
                if d.get("start_epoch"):
                    self._progress["epoch"] = int(d["start_epoch"])
            elif event.kind == "step":
                self._progress["last_step"] = max(int(d["step"]), self._progress.get("last_step", 0))
            elif event.kind in ("epoch", "checkpoint") and d.get("epoch") is not None:
                self._progress["epoch"] = max(int(d["epoch"]), self._progress.get("epoch", 0))
            if event.kind in LIFECYCLE_KINDS:
                self._events.append((event.kind, _describe(event), event.time))
            due = (
                event.kind in FLUSH_NOW_KINDS
                or len(self._points) >= self.flush_every_n
                or time.monotonic() - self._last_flush >= self.flush_every_s
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Writes everything buffered in one transaction (retried on lock contention)."""
        with self._lock:
            points, events, progress = self._points, self._events, self._progress
            self._points, self._events, self._progress = [], [], {}
            self._last_flush = time.monotonic()
        if not (points or events or progress):
            return
        from datetime import datetime, timezone

        def work(s: Session) -> None:
            write_points(self.reg, s, self.job_id, points)
            if progress:
                s.execute(update(Job.__table__).where(Job.__table__.c.id == self.job_id).values(**progress))
            for kind, msg, t in events:
                s.add(JobEvent(job_id=self.job_id, kind=kind, message=msg,
                               time=datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)))

        try:
            self.reg.run(work, what=f"metrics of job {self.job_id}")
        except Exception:
            # keep the data for the next flush rather than losing it; the caller sees the error
            with self._lock:
                self._points = points + self._points
                self._events = events + self._events
                for k, v in progress.items():
                    self._progress.setdefault(k, v)
            raise

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True


def _describe(event: Event) -> str:
    d = event.data
    if event.kind == "start":
        return f"epochs={d.get('epochs')} start_epoch={d.get('start_epoch', 0)} run_dir={d.get('run_dir')}"
    if event.kind == "checkpoint":
        return f"epoch {d.get('epoch')}: {d.get('path')}"
    if event.kind == "done":
        m = d.get("metrics") or {}
        return " ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, (int, float))) or "done"
    if event.kind == "failed":
        return str(d.get("error", ""))
    if event.kind == "stopped":
        return f"stopped at epoch {d.get('epoch')} step {d.get('step')}: {d.get('checkpoint')}"
    return str(d.get("message", ""))
