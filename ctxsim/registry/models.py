"""The registry's tables (SQLAlchemy 2.0 typed ORM; docs/architecture.md).

SCHEMA_VERSION is bumped with every change, each change being one Alembic revision in
``ctxsim/registry/alembic/versions/``; ``ctxsim.registry.migrations`` upgrades older files.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ctxsim.registry.states import (  # noqa: F401  (the stored vocabularies, importable from here)
    ACTIVE_STATUSES,
    EVENT_KINDS,
    FINAL_STATUSES,
    JOB_STATUSES,
    EventKind,
    JobStatus,
)

SCHEMA_VERSION = 4  # v2: jobs.updated_at (+index), ix_jobs_status_heartbeat; v3: events.payload;
# v4: jobs ids never reused (SQLite AUTOINCREMENT)



def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the registry file itself (``schema_version``)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(32))
    loss: Mapped[str] = mapped_column(String(32))
    resolution: Mapped[Optional[int]] = mapped_column(Integer)
    seed: Mapped[Optional[int]] = mapped_column(Integer)
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)

    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    # progress, kept current by the metric sink so the runs table needs no metric scan
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[Optional[int]] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer, default=0)

    executor: Mapped[str] = mapped_column(String(16), default="local")  # local | slurm | foreground
    n_gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[Optional[str]] = mapped_column(String(64))  # "0,1" as assigned
    worker_id: Mapped[Optional[str]] = mapped_column(String(128))
    worker_host: Mapped[Optional[str]] = mapped_column(String(128))
    worker_pid: Mapped[Optional[int]] = mapped_column(Integer)
    slurm_id: Mapped[Optional[str]] = mapped_column(String(64))
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime)

    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    exit_code: Mapped[Optional[int]] = mapped_column(Integer)
    error: Mapped[Optional[str]] = mapped_column(Text)

    git_commit: Mapped[Optional[str]] = mapped_column(String(64))
    git_dirty: Mapped[Optional[bool]] = mapped_column(Boolean)
    versions_json: Mapped[Optional[str]] = mapped_column(Text)
    run_dir: Mapped[Optional[str]] = mapped_column(String(1024))
    # bumped by every UPDATE of the row (Core and ORM): dashboards poll only what changed
    updated_at: Mapped[Optional[datetime]] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    tags: Mapped[list["Tag"]] = relationship(back_populates="job", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_jobs_claim", "status", "priority", "id"),
        Index("ix_jobs_dataset_loss", "dataset", "loss", "resolution"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_jobs_updated_at", "updated_at"),
        {"sqlite_autoincrement": True},  # a removed job's id is never handed out again (v4)
    )


class Metric(Base):
    """One point of a run's series; (job, key, step) is unique so resumed jobs never duplicate."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("job_id", "key", "step", name="uq_metrics_job_key_step"),)


class Summary(Base):
    """Best and last value of each metric of a job, maintained as points arrive."""

    __tablename__ = "summaries"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    best: Mapped[float] = mapped_column(Float)
    best_step: Mapped[int] = mapped_column(Integer)
    last: Mapped[float] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer)


class Baseline(Base):
    """A reference number (the paper's or imported) with its provenance."""

    __tablename__ = "baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resolution: Mapped[Optional[int]] = mapped_column(Integer)
    dataset: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(16), default="shipped")  # shipped | imported

    __table_args__ = (Index("ix_baselines_lookup", "dataset", "method", "resolution"),)


def json_payload(data: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """``data`` as strict JSON (what events.payload stores): NaN/inf become null, other objects text."""
    if data is None:
        return None

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(data, default=str, allow_nan=True)))


class JobEvent(Base):
    """Lifecycle and log lines of a job: ``kind`` (an EventKind), a human ``message`` and the
    event's structured ``payload`` (JSON; NULL for rows written before schema v3)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))


class Tag(Base):
    __tablename__ = "tags"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    job: Mapped[Job] = relationship(back_populates="tags")


class Worker(Base):
    """A worker daemon; alive while its heartbeat is fresh."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[Optional[str]] = mapped_column(String(64))
    executor: Mapped[str] = mapped_column(String(16), default="local")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="alive")  # alive | stopped
