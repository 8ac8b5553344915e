"""v4: job ids are never reused (SQLite AUTOINCREMENT, as PostgreSQL's sequences already behave).

Without AUTOINCREMENT, SQLite hands the id of a removed last job to the next one, so logs, run folders
and notes that say "job 2" would point at another job. SQLite cannot add AUTOINCREMENT to a table in
place: the ``jobs`` table is rebuilt (copy, drop, rename) with its rows, ids and indexes. The rebuild
runs with foreign keys off (``migrations.ensure_schema`` switches them off around a SQLite upgrade),
so dropping the old table does not cascade to the metrics, events, summaries and tags of its jobs.
On PostgreSQL only the version changes.

Revision ID: v4
Revises: v3
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v4"
down_revision = "v3"
branch_labels = None
depends_on = None

SCHEMA_VERSION = 4


def _set_version(value: str) -> None:
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def _rebuild_jobs(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("jobs", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild_jobs(True)
    _set_version(str(SCHEMA_VERSION))


def downgrade() -> None:
    _rebuild_jobs(False)
    _set_version("3")
