"""RegistrySink: the training loop's events into the registry, batched and idempotent (docs/architecture.md §4).

Points (``events.metric_points``) are buffered and written every ``flush_every_s`` seconds or
``flush_every_n`` points in one transaction: (key, step) pairs already stored are skipped and the
rest inserted with ON CONFLICT (job_id, key, step) DO NOTHING, so a resumed job that replays steps
never duplicates them (the first value of a step is kept) and only really new points are folded
into the summaries (upserted with ON CONFLICT (job_id, key) DO UPDATE). The same transaction maintains the
Summary rows (best and last per key) and the job's epoch/total_epochs/last_step. Lifecycle events
(start, checkpoint, stopped, done, failed, log) also land in the events table: a human message and
the event's data as the JSON ``payload`` (``compare`` reads the done event's fields from it). Epoch-level events
(epoch, eval, checkpoint, done, failed) flush at once, so everything before a checkpoint is stored
before a crash can happen after it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ctxsim.names import lower_is_better as _lower_is_better
from ctxsim.registry.db import Registry
from ctxsim.registry.models import EventKind, Job, JobEvent, Metric, Summary, json_payload
from ctxsim.registry.outage import Outage, outage_budget_s
from ctxsim.train.events import Event, metric_points

log = logging.getLogger(__name__)

LIFECYCLE_KINDS = (EventKind.START, EventKind.CHECKPOINT, EventKind.STOPPED, EventKind.DONE, EventKind.FAILED,
                   EventKind.LOG)
FLUSH_NOW_KINDS = ("epoch", "eval", EventKind.CHECKPOINT, EventKind.STOPPED, EventKind.DONE, EventKind.FAILED)


def lower_is_better(key: str) -> bool:
    """Whether a key's best is its minimum: declared once, in ctxsim.names.METRIC_DIRECTION."""
    return _lower_is_better(key)


def _ph(reg: Registry, n: int) -> str:
    mark = "?" if reg.engine.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def write_points(reg: Registry, s: Session, job_id: int, points: list[tuple[str, int, float, float]]) -> None:
    """Stores (key, step, value, time) points of one job and folds the new ones into its summaries.

    A (key, step) already stored (a resumed job replaying steps) is skipped: the first value of a
    step is kept and summaries see only new points. Driver-level executemany (no ORM objects).
    """
    if not points:
        return
    t = Metric.__table__
    conn = s.connection()
    batch: dict[tuple[str, int], tuple[str, int, float, float]] = {}
    for p in points:
        batch.setdefault((p[0], p[1]), p)
    steps = [p[1] for p in batch.values()]
    have = conn.execute(
        select(t.c.key, t.c.step).where(t.c.job_id == job_id, t.c.key.in_({k for k, _ in batch}),
                                        t.c.step.between(min(steps), max(steps)))
    ).all()
    for key_step in have:
        batch.pop(tuple(key_step), None)
    if not batch:
        return
    pts = list(batch.values())
    if reg.is_postgres:
        # COPY into a per-session temp table (emptied at commit), then one INSERT ... ON CONFLICT:
        # COPY's row writer is several times faster than adapting parameter arrays in Python.
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS ctxsim_points_in (job_id integer, key varchar(64), "
                        "step integer, value float8, time float8) ON COMMIT DELETE ROWS")
            with cur.copy("COPY ctxsim_points_in (job_id, key, step, value, time) FROM STDIN") as cp:
                for k, st, v, tm in pts:
                    cp.write_row((job_id, k, int(st), float(v), float(tm)))
            cur.execute("INSERT INTO metrics (job_id, key, step, value, time) "
                        "SELECT job_id, key, step, value, time FROM ctxsim_points_in ON CONFLICT DO NOTHING")
    else:
        on_conflict = " ON CONFLICT DO NOTHING" if reg.is_sqlite else ""
        conn.exec_driver_sql(
            f"INSERT INTO metrics (job_id, key, step, value, time) VALUES ({_ph(reg, 5)}){on_conflict}",
            [(job_id, k, st, float(v), float(tm)) for k, st, v, tm in pts],
        )
    _fold_summaries(reg, conn, job_id, pts)


def _fold_summaries(reg: Registry, conn: Any, job_id: int, points: list[tuple[str, int, float, float]]) -> None:
    # per key: best of the batch and the point with the highest step, merged with the stored row
    acc: dict[str, list] = {}
    for k, st, v, _t in points:
        b = acc.get(k)
        if b is None:
            acc[k] = [v, st, v, st]
            continue
        if (v < b[0]) if lower_is_better(k) else (v > b[0]):
            b[0], b[1] = v, st
        if st >= b[3]:
            b[2], b[3] = v, st
    t = Summary.__table__
    rows = conn.execute(select(t.c.key, t.c.best, t.c.best_step, t.c.last, t.c.last_step)
                        .where(t.c.job_id == job_id, t.c.key.in_(list(acc)))).all()
    for r in rows:
        b = acc[r.key]
        if not ((b[0] < r.best) if lower_is_better(r.key) else (b[0] > r.best)):
            b[0], b[1] = r.best, r.best_step
        if b[3] <= r.last_step:
            b[2], b[3] = r.last, r.last_step
    conn.exec_driver_sql(
        f"INSERT INTO summaries (job_id, key, best, best_step, last, last_step) VALUES ({_ph(reg, 6)}) "
        "ON CONFLICT (job_id, key) DO UPDATE SET best = excluded.best, best_step = excluded.best_step, "
        "last = excluded.last, last_step = excluded.last_step",
        [(job_id, k, float(b[0]), int(b[1]), float(b[2]), int(b[3])) for k, b in acc.items()],
    )


class RegistrySink:
    """EventSink writing a job's metric points, summaries, progress and lifecycle to the registry."""

    def __init__(self, reg: Registry, job_id: int, flush_every_s: float = 1.0, flush_every_n: int = 2000,
                 outage_s: Optional[float] = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.reg = reg
        # a registry that is away (server restart, lock held too long): buffer and retry, up to this long
        self.outage = Outage(outage_budget_s() if outage_s is None else outage_s)
        self._sleep = sleep
        self.job_id = job_id
        self.flush_every_s = flush_every_s
        self.flush_every_n = flush_every_n
        self._points: list[tuple[str, int, float, float]] = []
        self._events: list[tuple[str, str, Optional[dict[str, Any]], float]] = []
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
                self._events.append((event.kind, _describe(event), json_payload(event.data), event.time))
            due = (
                event.kind in FLUSH_NOW_KINDS
                or len(self._points) >= self.flush_every_n
                or time.monotonic() - self._last_flush >= self.flush_every_s
            )
        if due and self.outage.due():
            self._flush_or_keep()

    def _flush_or_keep(self) -> None:
        """A flush that, while the registry is away, keeps the data for a later try (within the
        outage budget) instead of failing the training job."""
        what = f"metrics of job {self.job_id}"
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001 - Outage.failed re-raises all but an outage
            self.outage.failed(e, what)
            return
        self.outage.recovered(what)

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
            for kind, msg, payload, t in events:
                s.add(JobEvent(job_id=self.job_id, kind=kind, message=msg, payload=payload,
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
        """Writes what is left, waiting out an outage (within its budget) if the registry is away."""
        if self.closed:
            return
        what = f"metrics of job {self.job_id}"
        while True:
            try:
                self.flush()
                break
            except Exception as e:  # noqa: BLE001 - Outage.failed re-raises all but an outage
                self._sleep(self.outage.failed(e, what))
        self.outage.recovered(what)
        self.closed = True


def _describe(event: Event) -> str:
    d = event.data
    if event.kind == "start":
        return f"epochs={d.get('epochs')} start_epoch={d.get('start_epoch', 0)} run_dir={d.get('run_dir')}"
    if event.kind == "checkpoint":
        return f"epoch {d.get('epoch')}: {d.get('path')}"
    if event.kind == "done":
        m = d.get("metrics") or {}
        parts = [f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, (int, float))]
        parts += [f"{k}={d[k]}" for k in ("selected", "selected_on", "best_epoch") if d.get(k) is not None]
        parts += [f"skipped_images={d['skipped_images']}"] if d.get("skipped_images") else []
        return " ".join(parts) or "done"
    if event.kind == "failed":
        return str(d.get("error", ""))
    if event.kind == "stopped":
        return f"stopped at epoch {d.get('epoch')} step {d.get('step')}: {d.get('checkpoint')}"
    return str(d.get("message", ""))
