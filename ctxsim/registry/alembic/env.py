"""Alembic environment of the registry.

ctxsim runs it programmatically (``ctxsim.registry.migrations.ensure_schema``): the caller opens the
transaction, takes the migration lock and passes its connection in ``config.attributes``; every
revision then runs inside that one transaction (SQLite and PostgreSQL both have transactional DDL).
"""

from __future__ import annotations

from alembic import context

from ctxsim.registry.migrations import VERSION_TABLE
from ctxsim.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the registry schema is migrated by ctxsim itself (open_registry); "
                       "there is no offline or stand-alone mode")

context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
