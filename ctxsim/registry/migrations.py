"""Schema creation and upgrades with Alembic (the environment is ``ctxsim/registry/alembic/``).

Each revision in ``alembic/versions/`` is one schema version; it also keeps the integer
``meta.schema_version`` that releases before Alembic read (they refuse a larger one). Opening:

- no tables: every revision runs, creating the schema at the head;
- a registry written before Alembic (``meta.schema_version`` 1 or 2, no ``ctxsim_alembic_version``):
  the SQLite file is backed up, a v1 file gets the v1 -> v2 change, then it is stamped to
  revision ``v2`` without DDL and upgraded like any other;
- an older revision: the SQLite file is backed up first (``<file>.bak-v<N>-<timestamp>``), then
  the missing revisions run in one transaction under a migration lock (SQLite's write lock,
  a PostgreSQL advisory lock), so two processes opening the same registry upgrade it once;
- a newer schema (a ``meta.schema_version`` above ``SCHEMA_VERSION`` or a revision this ctxsim
  does not know): RegistryError, nothing written.

A new schema change is a new file in ``alembic/versions/`` (copy the latest: ``down_revision`` is
its predecessor, ``SCHEMA_VERSION`` one more) plus the same change in ``models.py``;
``tests/test_registry.py`` checks that the revisions build exactly the models' schema.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.types import DateTime

from ctxsim.errors import RegistryError
from ctxsim.registry.models import SCHEMA_VERSION

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).with_name("alembic")
PRE_ALEMBIC_REVISION = "v2"  # what a registry written before Alembic (schema v2) is stamped to
# ctxsim's own Alembic version table: "alembic_version" belongs to Optuna, whose study tables share
# the registry database (ctxsim tune; optuna.load_study(storage=<registry URL>) checks that table)
VERSION_TABLE = "ctxsim_alembic_version"
_PG_MIGRATION_LOCK = 0x63747873  # pg_advisory_xact_lock key ("ctxs")
# The newest revision in alembic/versions (a test holds it to Alembic's head): opening a current
# registry compares with it and never loads Alembic, which costs a read command ~150 ms.
HEAD_REVISION = "v4"


def alembic_config(conn: Optional[Connection] = None) -> "Config":
    """An Alembic Config for the shipped environment, bound to ``conn`` (env.py uses it)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@functools.lru_cache(maxsize=1)
def _script() -> "ScriptDirectory":
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def _known(rev: str) -> bool:
    if rev == HEAD_REVISION:
        return True
    try:
        return _script().get_revision(rev) is not None
    except Exception:  # unknown or malformed revision id
        return False


def _v1_to_v2(conn: Connection) -> None:
    """Pre-Alembic v1 -> v2: jobs.updated_at (dashboard polling) and the reaper's index."""
    cols = {c["name"] for c in inspect(conn).get_columns("jobs")}
    if "updated_at" not in cols:
        ddl_type = DateTime().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE jobs ADD COLUMN updated_at {ddl_type}"))
        conn.execute(text("UPDATE jobs SET updated_at = COALESCE(finished_at, started_at, created_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_updated_at ON jobs (updated_at)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_status_heartbeat ON jobs (status, heartbeat_at)"))


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


def _state(conn: Connection) -> tuple[set[str], Optional[int], Optional[str]]:
    """(table names, meta.schema_version, alembic revision) as seen by ``conn``."""
    tables = set(inspect(conn).get_table_names())
    version = rev = None
    if "meta" in tables:
        v = conn.execute(text("SELECT value FROM meta WHERE " + _key_col(conn) + " = 'schema_version'")).scalar()
        version = int(v) if v is not None else None
    if VERSION_TABLE in tables:
        rev = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return tables, version, rev


def _key_col(conn: Connection) -> str:
    return conn.dialect.identifier_preparer.quote("key")


def _check(label: str, tables: set[str], version: Optional[int], rev: Optional[str]) -> None:
    """Refuses what this ctxsim must not touch (newer, or tables without a version)."""
    if version is not None and version > SCHEMA_VERSION:
        raise RegistryError(
            f"registry {label} has schema v{version}, newer than this ctxsim (v{SCHEMA_VERSION}); upgrade ctxsim"
        )
    if rev is not None and not _known(rev):
        raise RegistryError(
            f"registry {label} has schema revision {rev}, newer than this ctxsim (v{SCHEMA_VERSION}); upgrade ctxsim"
        )
    if "meta" in tables and version is None:
        raise RegistryError(f"registry {label} has no schema_version in its meta table; not touching it")
    if "meta" not in tables and ("jobs" in tables or rev is not None):
        raise RegistryError(f"registry {label} has ctxsim tables but no schema version; not touching it")
    if rev is None and version is not None and version > 2:
        raise RegistryError(f"registry {label} has schema v{version} but no Alembic revision; not touching it")


def _current(version: Optional[int], rev: Optional[str]) -> bool:
    return rev == HEAD_REVISION and version == SCHEMA_VERSION


def schema_is_current(engine: Engine, label: str) -> Optional[bool]:
    """Whether the database behind ``engine`` has this ctxsim's schema: True (current), False (older:
    ``ensure_schema`` upgrades it), None (no ctxsim tables). RegistryError, naming ``label``, for a
    schema this ctxsim must not touch (newer, or tables without a version)."""
    with engine.connect() as conn:
        tables, version, rev = _state(conn)
    _check(label, tables, version, rev)
    if "meta" not in tables:
        return None
    return _current(version, rev)


def ensure_schema(engine: Engine, label: str, sqlite_path: Optional[Path] = None, create: bool = True) -> None:
    """Creates, checks or upgrades the schema behind ``engine`` (see the module docstring). ``label``
    names the database in errors; ``sqlite_path`` is the file backed up before an upgrade."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        tables, version, rev = _state(conn)
    _check(label, tables, version, rev)
    if _current(version, rev):
        return
    if "meta" not in tables and not create:
        return
    if version is not None:  # an existing registry: back it up before the first write
        if sqlite_path is not None:
            bak = backup_sqlite(sqlite_path, version)
            log.warning("registry schema v%d -> v%d; backup written to %s", version, SCHEMA_VERSION, bak)
        else:
            log.warning("registry schema v%d -> v%d (no file backup for %s: back it up with its own tools)",
                        version, SCHEMA_VERSION, engine.dialect.name)
    with engine.connect() as conn, _foreign_keys_off(conn, sqlite), conn.begin():
        # SQLite: BEGIN IMMEDIATE, the write lock
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        tables, version, rev = _state(conn)  # again, under the lock: another process may have upgraded
        _check(label, tables, version, rev)
        if _current(version, rev):
            return
        from alembic import command

        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines ended up in every job log
        cfg = alembic_config(conn)
        if rev is None and version is not None:  # written before Alembic
            if version == 1:
                _v1_to_v2(conn)
            command.stamp(cfg, PRE_ALEMBIC_REVISION)
            conn.execute(text("UPDATE meta SET value = '2' WHERE " + _key_col(conn) + " = 'schema_version'"))
        command.upgrade(cfg, "head")
        if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
            raise RegistryError(f"registry {label}: the schema upgrade broke a foreign key; nothing was changed")


@contextlib.contextmanager
def _foreign_keys_off(conn: Connection, sqlite: bool):
    """SQLite table rebuilds (v4) drop a table: with foreign keys on, that would cascade to its
    children. The pragma only works outside a transaction, so it is set on the raw connection
    before BEGIN, and restored after (the SQLite manual's procedure for schema changes)."""
    raw = conn.connection.dbapi_connection if sqlite else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")
