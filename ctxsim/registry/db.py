"""Engine setup for the registry: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or any SQLAlchemy URL.

``open_registry()`` is the one entry point; it resolves ``--db``/``CTXSIM_DB``/``experiments.db``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DB_FILE = "experiments.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def resolve_url(url: str | os.PathLike | None = None) -> str:
    """``--db`` value, else ``$CTXSIM_DB``, else ``experiments.db`` in the current directory.

    A plain path (no ``://``) means a SQLite file.
    """
    url = str(url) if url else os.environ.get("CTXSIM_DB") or DEFAULT_DB_FILE
    if "://" not in url:
        url = "sqlite:///" + str(Path(url).expanduser().absolute())
    return url


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - unparsable URL: say nothing of it
        return "<database url>"


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN; take it over so every write
    # transaction starts with BEGIN IMMEDIATE (no lock upgrade deadlocks between workers).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Registry:
    """An open registry: an engine and its session factory."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.Session = sessionmaker(engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on error."""
        with self.Session.begin() as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Registry({redact(self.url)})"


def make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def open_registry(url: str | os.PathLike | None = None, create: bool = True) -> Registry:
    """Opens (and creates or upgrades, when ``create``) the registry at ``url``."""
    from ctxsim.registry.migrations import ensure_schema

    resolved = resolve_url(url)
    reg = Registry(resolved, make_engine(resolved))
    ensure_schema(reg, create=create)
    return reg
