"""The registry handle and its engines: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or any SQLAlchemy URL.

``open_registry()`` is the one entry point; it resolves ``--db``/``CTXSIM_DB``/``experiments.db``
(``ctxsim.registry.urls``) and creates or upgrades the schema (``ctxsim.registry.migrations``,
Alembic); with ``readonly`` it opens an existing SQLite file ``mode=ro`` (no write lock, no file
created, a read-only file works). Every wait for another process's lock is bounded by the lock
timeout (``--lock-timeout``, ``CTXSIM_LOCK_TIMEOUT``, 30 s) and waited for in Python
(``ctxsim.registry.locks``), so Ctrl-C ends it at once. ``read_registry()`` gives readers of a
writable registry a handle that cannot write or take the write lock.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ctxsim.errors import NoRegistryError, RegistryError, RegistryURLError, one_line
from ctxsim.registry import locks
from ctxsim.registry.locks import (  # noqa: F401  (the registry's public names, importable from here as before)
    DEFAULT_LOCK_TIMEOUT_S,
    interrupt_lock_wait,
    is_retryable,
    lock_timeout_s,
    poll_lock,
    retry_db,
    waiting_for_lock,
)
from ctxsim.registry.urls import (  # noqa: F401  (as above)
    DEFAULT_DB_FILE,
    URL_FORMS,
    damaged_registry,
    describe_db_error,
    display_url,
    no_registry,
    redact,
    resolve_url,
    scheme_problem,
    sqlite_file,
)

READ_BUSY_TIMEOUT_MS = 1000  # a read blocked longer than this reports "locked" instead of waiting
T = TypeVar("T")


def _sqlite_setup(engine: Engine, url: str, timeout_s: float) -> None:
    # pysqlite's own transaction handling defers BEGIN; take it over so every write
    # transaction starts with BEGIN IMMEDIATE (no lock upgrade deadlocks between workers).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        # switching to WAL waits for a lock held in rollback mode
        poll_lock(dbapi_conn, lambda: cur.execute("PRAGMA journal_mode=WAL"), url, timeout_s)
        cur.execute("PRAGMA synchronous=NORMAL")
        # dashboards re-read the same pages: a 32 MB page cache and memory-mapped reads (lazy)
        cur.execute("PRAGMA cache_size=-32000")
        cur.execute("PRAGMA mmap_size=268435456")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # the write lock: the one wait another process can cause, waited for in Python (Ctrl-C)
        poll_lock(conn.connection.dbapi_connection, lambda: conn.exec_driver_sql("BEGIN IMMEDIATE"), url,
                   timeout_s)


class Registry:
    """An open registry: an engine and its session factory."""

    def __init__(self, url: str, engine: Engine, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                 readonly: bool = False) -> None:
        self.url = url
        self.engine = engine
        self.lock_timeout = lock_timeout  # seconds a write waits for another process's lock
        self.readonly = readonly  # opened read-only (mode=ro, query_only): reads never lock
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

        return retry_db(once, timeout_s=self.lock_timeout, what=what)

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Registry({redact(self.url)})"


def make_engine(url: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": lock_timeout})
        _sqlite_setup(engine, url, lock_timeout)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _query_only(engine: Engine, busy_timeout_ms: int) -> None:
    """Every connection of ``engine`` (SQLite) refuses writes and waits ``busy_timeout_ms`` for a lock."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA query_only=1")
        cur.close()


def _readonly_sqlite_engine(path: Path, url: str, timeout_s: float, immutable: bool = False) -> Engine:
    """An engine on a SQLite file opened read-only (``mode=ro``): deferred transactions that take no
    write lock, ``query_only``, never creating the file; works on a file without write permission.
    ``immutable`` (a file nobody can write, in a folder where the WAL index cannot be made) skips
    locking altogether."""
    # quote() is what pathname2url does on POSIX; urllib.request is not imported here because a
    # signal handler that opens a registry during that import (submitit's checkpoint) would meet
    # the half-initialised module
    uri = "file:" + quote(str(path)) + "?mode=ro" + ("&immutable=1" if immutable else "")

    def connect():
        return sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect)
    _query_only(engine, int(timeout_s * 1000))

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        # a read waits only for a lock held outside WAL mode (e.g. sqlite3's BEGIN EXCLUSIVE on a
        # rollback-journal file): report that wait like a writer's
        if locks.lock_wait_notifier is not None:
            cm = locks.lock_wait(url, timeout_s)
            cm.__enter__()
            conn.info["ctxsim_lock_wait"] = cm

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, *_a):
        cm = conn.info.pop("ctxsim_lock_wait", None)
        if cm is not None:
            cm.__exit__(None, None, None)

    @event.listens_for(engine, "handle_error")
    def _failed(ctx):
        conn = ctx.connection
        cm = conn.info.pop("ctxsim_lock_wait", None) if conn is not None else None
        if cm is not None:
            cm.__exit__(None, None, None)
        if "database is locked" in str(ctx.original_exception):  # reads are not retried: one line
            raise RegistryError(f"registry {path} is locked by another process; gave up after "
                                f"{timeout_s:g} s (--lock-timeout)") from None

    return engine


def _schema_current(reg: Registry) -> bool:
    """Checks the schema over a connection that takes no lock: True when it is current; raises
    RegistryError for a newer one. No tables at all: NoRegistryError when ``reg`` is a file."""
    from ctxsim.registry.migrations import schema_is_current

    current = schema_is_current(reg.engine, repr(reg))
    if current is None:
        raise no_registry(reg.sqlite_path or redact(reg.url))
    return current


def _open_readonly(resolved: str, path: Optional[Path], timeout_s: float) -> Registry:
    """``open_registry(readonly=True)``: see there."""
    if path is None:  # a server: reads take no lock there; check the schema, create nothing
        reg = open_registry(resolved, create=False, lock_timeout=timeout_s)
        try:
            _schema_current(reg)
        except RegistryError:
            reg.dispose()
            raise
        except DBAPIError as e:
            reg.dispose()
            raise RegistryError(f"cannot open registry {redact(resolved)}: {one_line(e.orig or e)}") from None
        reg.readonly = True
        return reg
    if not path.is_file():
        raise no_registry(path)
    for immutable in (False, True):
        reg = Registry(resolved, _readonly_sqlite_engine(path, resolved, timeout_s, immutable), timeout_s, True)
        try:
            current = _schema_current(reg)
        except RegistryError:
            reg.dispose()
            raise
        except DBAPIError as e:
            reg.dispose()
            text = one_line(e.orig or e)
            if not immutable and "unable to open" in text and not os.access(path.parent, os.W_OK):
                continue  # no WAL index can be made next to a read-only file: read it as immutable
            if "locked" in text:
                raise RegistryError(f"registry {path} is locked by another process; gave up after "
                                    f"{timeout_s:g} s (--lock-timeout)") from None
            if "malformed" in text:
                raise RegistryError(damaged_registry(str(path), text)) from None
            if "not a database" in text:
                raise RegistryError(f"{path} is not a ctxsim registry: {text}") from None
            raise RegistryError(f"cannot open registry {path}: {text}") from None
        if current:
            return reg
        reg.dispose()
        break
    # an older schema: upgraded once through a write connection (backed up first), then read
    open_registry(resolved, lock_timeout=timeout_s).dispose()
    return _open_readonly(resolved, path, timeout_s)


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


def open_registry(url: str | os.PathLike | None = None, create: bool = True, readonly: bool = False,
                  lock_timeout: float | str | None = None) -> Registry:
    """Opens (and creates or upgrades, when ``create``) the registry at ``url``.

    ``readonly`` (the read commands and the dashboard's reads): a SQLite file is opened with
    ``mode=ro``, so reads never take or wait for the write lock of a worker, a file without write
    permission works, and a missing file is NoRegistryError (nothing is created). ``lock_timeout``
    (seconds, default $CTXSIM_LOCK_TIMEOUT or 30) bounds every wait for another process's lock;
    ``lock_wait_notifier`` hears of a wait longer than a second.

    Every failure (unreachable server, bad credentials, read-only or locked file, newer schema)
    becomes one RegistryError line naming the database with its password hidden.
    """
    from ctxsim.registry.migrations import ensure_schema

    timeout_s = lock_timeout_s(lock_timeout)
    resolved = resolve_url(url)
    try:
        u = make_url(resolved)
    except Exception as e:
        raise RegistryURLError(f"invalid registry URL {redact(resolved)}: {one_line(e)}; a registry is {URL_FORMS}") from None
    problem = scheme_problem(u)
    if problem:
        raise RegistryURLError(f"invalid registry URL {redact(resolved)}: {problem}")
    path = sqlite_file(u)
    if readonly:
        return _open_readonly(resolved, path, timeout_s)
    if path is not None and (u.query or {}).get("mode") != "ro":
        if not create and not path.is_file():
            raise no_registry(path)
        _check_sqlite_writable(path)
    try:
        engine = make_engine(resolved, timeout_s)
    except ArgumentError as e:  # unparseable URL or unknown dialect: bad input
        raise RegistryURLError(f"invalid registry URL {redact(resolved)}: {one_line(e)}") from None
    except Exception as e:  # missing driver
        raise RegistryError(f"cannot open registry {redact(resolved)}: {one_line(e)}") from None
    reg = Registry(resolved, engine, timeout_s)
    if path is not None and path.is_file():
        # a current schema is checked without the write lock (ensure_schema's connection would
        # BEGIN IMMEDIATE): opening never waits for a worker's write
        ro = None
        try:
            ro = Registry(resolved, _readonly_sqlite_engine(path, resolved, timeout_s), timeout_s, True)
            if _schema_current(ro):
                return reg
        except NoRegistryError:
            pass  # an empty file: created below
        except RegistryError:
            engine.dispose()
            raise
        except DBAPIError:
            pass  # the full path below words the error
        finally:
            if ro is not None:
                ro.dispose()
    try:
        retry_db(lambda: ensure_schema(reg.engine, repr(reg), reg.sqlite_path, create=create), timeout_s=timeout_s,
                 what="opening the registry")
    except RegistryError:
        engine.dispose()
        raise
    except DBAPIError as e:
        engine.dispose()
        raise RegistryError(f"cannot open registry {redact(resolved)}: {one_line(e.orig or e)}") from None
    return reg


def read_registry(reg: Registry) -> Registry:
    """A read-only handle on an open registry, for readers (the dashboard, read commands).

    On SQLite the reads use their own engine: deferred (not BEGIN IMMEDIATE) transactions, so they
    never take the write lock from a worker, ``query_only`` so they cannot write, and a short busy
    timeout so a locked file is reported within a second instead of hanging a thread for 30 s.
    Other backends share the registry's engine.
    """
    if not reg.is_sqlite or reg.readonly:
        return reg
    engine = create_engine(reg.url, connect_args={"timeout": READ_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})
    _query_only(engine, READ_BUSY_TIMEOUT_MS)
    # readonly: what would write through it (loading the shipped baselines) leaves that to a writer
    return Registry(reg.url, engine, reg.lock_timeout, readonly=True)


def registry_is_readonly(db: str | os.PathLike | None) -> bool:
    """True for an existing SQLite registry file that cannot be written (by the same rule that
    ``open_registry`` refuses one with), or one named with ``?mode=ro``. A server, a missing file
    or an unparsable URL: False (opening it says what is wrong)."""
    try:
        u = make_url(resolve_url(db))
    except Exception:  # noqa: BLE001 - opening the registry words a bad URL
        return False
    path = sqlite_file(u)
    if path is None or not path.is_file():
        return False
    if (u.query or {}).get("mode") == "ro":
        return True
    try:
        _check_sqlite_writable(path)
    except RegistryError:
        return True
    return False
