"""Engine setup for the registry: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or any SQLAlchemy URL.

``open_registry()`` is the one entry point; it resolves ``--db``/``CTXSIM_DB``/``experiments.db``.
"""

from __future__ import annotations

import logging
import os
import random
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ctxsim.errors import RegistryError

log = logging.getLogger(__name__)

DEFAULT_DB_FILE = "experiments.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")

# Errors worth retrying: SQLite lock contention, PostgreSQL serialization failures / deadlocks.
_RETRYABLE_TEXT = ("database is locked", "database table is locked", "database is busy",
                   "could not serialize access", "deadlock detected")


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
        # dashboards re-read the same pages: a 32 MB page cache and memory-mapped reads (lazy)
        cur.execute("PRAGMA cache_size=-32000")
        cur.execute("PRAGMA mmap_size=268435456")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_retryable(exc: BaseException) -> bool:
    """True for transient contention errors ("database is locked", PG deadlock/serialization)."""
    if not isinstance(exc, DBAPIError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    return any(t in text for t in _RETRYABLE_TEXT)


def retry_db(fn: Callable[[], T], *, timeout_s: float = 120.0, what: str = "registry write") -> T:
    """Runs ``fn`` (one whole transaction), retrying transient lock errors with jittered backoff.

    Gives up with a RegistryError after ``timeout_s``: a "database is locked" never escapes raw.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return fn()
        except DBAPIError as e:
            if not is_retryable(e):
                raise
            if time.monotonic() > deadline:
                raise RegistryError(f"{what}: registry still locked after {timeout_s:.0f} s") from e
            log.debug("%s: %s; retrying in %.3f s", what, e.orig, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


class Registry:
    """An open registry: an engine and its session factory."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.Session = sessionmaker(engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def sqlite_path(self) -> Optional[Path]:
        """The database file of a SQLite registry (None for other backends or in-memory)."""
        u = make_url(self.url)
        if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
            return None
        return Path(u.database)

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on error."""
        with self.Session.begin() as s:
            yield s

    def run(self, fn: Callable[[Session], T], what: str = "registry write") -> T:
        """``fn(session)`` in one transaction, retried as a whole on lock contention."""

        def once() -> T:
            with self.Session.begin() as s:
                return fn(s)

        return retry_db(once, what=what)

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


def _check_sqlite_writable(path: Path) -> None:
    """A read-only registry file (or folder) is refused up front, before anything is written."""
    if path.exists():
        mode = path.stat().st_mode
        # no write bit at all counts as read-only even for root, who could otherwise write anyway
        if not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise RegistryError(f"registry {path} is read-only (make it writable or copy it)")
        folder = path.parent
    else:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RegistryError(f"registry {path}: folder {folder} is not writable")


def open_registry(url: str | os.PathLike | None = None, create: bool = True) -> Registry:
    """Opens (and creates or upgrades, when ``create``) the registry at ``url``.

    Every failure (unreachable server, bad credentials, read-only or locked file, newer schema)
    becomes one RegistryError line naming the database with its password hidden.
    """
    from ctxsim.registry.migrations import ensure_schema

    resolved = resolve_url(url)
    try:
        u = make_url(resolved)
    except Exception as e:
        raise RegistryError(f"invalid registry URL {redact(resolved)}: {e}") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" \
            and (u.query or {}).get("mode") != "ro":
        _check_sqlite_writable(Path(u.database))
    try:
        engine = make_engine(resolved)
    except Exception as e:  # missing driver, bad URL
        raise RegistryError(f"cannot open registry {redact(resolved)}: {_first_line(e)}") from None
    reg = Registry(resolved, engine)
    try:
        retry_db(lambda: ensure_schema(reg, create=create), timeout_s=60, what="opening the registry")
    except RegistryError:
        engine.dispose()
        raise
    except DBAPIError as e:
        engine.dispose()
        raise RegistryError(f"cannot open registry {redact(resolved)}: {_first_line(e.orig or e)}") from None
    return reg


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def describe_db_error(url: str, e: BaseException) -> str:
    """One line for a database error raised while using an open registry (password hidden)."""
    orig = getattr(e, "orig", None) or e
    text = _first_line(orig)
    if "readonly" in text.replace("-", "").replace(" ", "").lower():
        return f"registry {redact(url)} is read-only: {text}"
    return f"registry {redact(url)}: {text}"
