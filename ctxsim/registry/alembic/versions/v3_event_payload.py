"""v3: events.payload, the structured data of a job event as JSON (rows written before: NULL).

Revision ID: v3
Revises: v2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v3"
down_revision = "v2"
branch_labels = None
depends_on = None

SCHEMA_VERSION = 3


def _set_version(value: str) -> None:
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))


def upgrade() -> None:
    op.add_column("events", sa.Column("payload", sa.JSON(), nullable=True))
    # releases before Alembic read this integer and refuse a registry newer than they are
    _set_version(str(SCHEMA_VERSION))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("payload")
    _set_version("2")
