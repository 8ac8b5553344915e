"""Schema creation and versioning: an Alembic equivalent small enough to read (DESIGN §4).

``meta.schema_version`` holds the version of a registry. Opening:

- no tables: create them all at ``SCHEMA_VERSION``;
- an older version: back the SQLite file up first (``<file>.bak-v<N>-<timestamp>``), then apply
  ``MIGRATIONS[N]``, ``MIGRATIONS[N+1]``, ... each in its own transaction, stamping the version
  after each step;
- a newer version: RegistryError, nothing written.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.types import DateTime

from ctxsim.errors import RegistryError
from ctxsim.registry.models import SCHEMA_VERSION, Base, Meta

if TYPE_CHECKING:
    from ctxsim.registry.db import Registry

log = logging.getLogger(__name__)


def _v1_to_v2(conn: Connection) -> None:
    """v2: jobs.updated_at (incremental dashboard polling) and the reaper's (status, heartbeat) index."""
    cols = {c["name"] for c in inspect(conn).get_columns("jobs")}
    if "updated_at" not in cols:
        ddl_type = DateTime().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE jobs ADD COLUMN updated_at {ddl_type}"))
        conn.execute(text("UPDATE jobs SET updated_at = COALESCE(finished_at, started_at, created_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_updated_at ON jobs (updated_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_status_heartbeat ON jobs (status, heartbeat_at)"))


# MIGRATIONS[n] upgrades a registry from version n to n + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


def read_schema_version(reg: "Registry") -> int | None:
    """The registry's stamped version, or None when it has no tables yet."""
    if "meta" not in set(inspect(reg.engine).get_table_names()):
        return None
    with reg.Session() as s:
        row = s.scalar(select(Meta).where(Meta.key == "schema_version"))
    return int(row.value) if row is not None else None


def backup_sqlite(path: Path, version: int) -> Path:
    """A consistent copy of a SQLite registry (the backup API also copies WAL content)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    dst = path.with_name(f"{path.name}.bak-v{version}-{stamp}")
    n = 1
    while dst.exists():
        dst = path.with_name(f"{path.name}.bak-v{version}-{stamp}-{n}")
        n += 1
    src_conn = sqlite3.connect(str(path))
    dst_conn = sqlite3.connect(str(dst))
    try:
        src_conn.backup(dst_conn)
    finally:
        dst_conn.close()
        src_conn.close()
    return dst


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(Meta.__table__.delete().where(Meta.key == "schema_version"))
    conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(version)))


def ensure_schema(reg: "Registry", create: bool = True) -> None:
    """Creates, checks or upgrades the schema of ``reg`` (see the module docstring)."""
    tables = set(inspect(reg.engine).get_table_names())
    if "meta" not in tables:
        if not create:
            return
        if "jobs" in tables:
            raise RegistryError(f"registry {reg!r} has ctxsim tables but no schema version; not touching it")
        Base.metadata.create_all(reg.engine)
        with reg.engine.begin() as conn:
            _stamp(conn, SCHEMA_VERSION)
        return
    version = read_schema_version(reg)
    if version is None:
        raise RegistryError(f"registry {reg!r} has no schema_version in its meta table; not touching it")
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"registry {reg!r} has schema v{version}, newer than this ctxsim (v{SCHEMA_VERSION}); upgrade ctxsim"
        )
    if version == SCHEMA_VERSION:
        return
    missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
    if missing:
        raise RegistryError(f"registry {reg!r} has schema v{version}; no migration from v{missing[0]}")
    path = reg.sqlite_path
    if path is not None:
        bak = backup_sqlite(path, version)
        log.warning("registry schema v%d -> v%d; backup written to %s", version, SCHEMA_VERSION, bak)
    else:
        log.warning("registry schema v%d -> v%d (no file backup for %s: back it up with its own tools)",
                    version, SCHEMA_VERSION, reg.engine.dialect.name)
    for v in range(version, SCHEMA_VERSION):
        with reg.engine.begin() as conn:
            now = conn.scalar(select(Meta.value).where(Meta.key == "schema_version"))
            if now is not None and int(now) > v:  # another process upgraded meanwhile
                continue
            MIGRATIONS[v](conn)
            _stamp(conn, v + 1)
    # tables added by later versions that no step creates explicitly
    Base.metadata.create_all(reg.engine)
