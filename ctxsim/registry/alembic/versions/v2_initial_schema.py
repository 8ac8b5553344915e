"""v2: the registry schema as ctxsim wrote it before Alembic.

A registry written then (``meta.schema_version`` = 2, no ``alembic_version`` table) is stamped to
this revision without any DDL; a new registry is created by it.

Revision ID: v2
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v2"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA_VERSION = 2


def _fk_job() -> sa.ForeignKey:
    return sa.ForeignKey("jobs.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200)),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("loss", sa.String(32), nullable=False),
        sa.Column("resolution", sa.Integer),
        sa.Column("seed", sa.Integer),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("total_epochs", sa.Integer),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("n_gpus", sa.Integer, nullable=False),
        sa.Column("gpus", sa.String(64)),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("worker_host", sa.String(128)),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("slurm_id", sa.String(64)),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("exit_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean),
        sa.Column("versions_json", sa.Text),
        sa.Column("run_dir", sa.String(1024)),
        sa.Column("updated_at", sa.DateTime),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "id"])
    op.create_index("ix_jobs_config_hash", "jobs", ["config_hash"])
    op.create_index("ix_jobs_updated_at", "jobs", ["updated_at"])
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])
    op.create_index("ix_jobs_dataset_loss", "jobs", ["dataset", "loss", "resolution"])
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resolution", sa.Integer),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
    )
    op.create_index("ix_baselines_lookup", "baselines", ["dataset", "method", "resolution"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("gpus", sa.String(64)),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, _fk_job(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.UniqueConstraint("job_id", "key", "step", name="uq_metrics_job_key_step"),
    )
    op.create_table(
        "summaries",
        sa.Column("job_id", sa.Integer, _fk_job(), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("best", sa.Float, nullable=False),
        sa.Column("best_step", sa.Integer, nullable=False),
        sa.Column("last", sa.Float, nullable=False),
        sa.Column("last_step", sa.Integer, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, _fk_job(), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_events_job_id", "events", ["job_id"])
    op.create_table(
        "tags",
        sa.Column("job_id", sa.Integer, _fk_job(), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def downgrade() -> None:
    for table in ("tags", "events", "summaries", "metrics", "workers", "baselines", "jobs", "meta"):
        op.drop_table(table)
