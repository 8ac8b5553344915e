"""Waiting for another process's lock, and retrying transient contention.

A SQLite write waits for the lock in Python (``poll_lock``: short busy timeouts, retried), so
Ctrl-C ends the wait at once and ``lock_wait_notifier`` hears of a wait longer than a second;
``retry_db`` reruns a whole transaction on "database is locked" or a PostgreSQL
serialization failure, and words the final give-up as one RegistryError line.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TypeVar

from sqlalchemy.exc import DBAPIError

from ctxsim.errors import ConfigError, RegistryError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_LOCK_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000  # --lock-timeout / CTXSIM_LOCK_TIMEOUT
LOCK_NOTICE_S = 1.0  # a wait for the SQLite lock longer than this is reported (lock_wait_notifier)
LOCK_POLL_MS = 100  # a write waits for the lock in tries this long, so Ctrl-C is seen between them
T = TypeVar("T")

# Called once per blocked statement after LOCK_NOTICE_S of waiting for another process's SQLite
# lock, with the registry's URL and the timeout. The CLI sets it (a line on stderr); None: silent.
lock_wait_notifier: Optional[Callable[[str, float], None]] = None


def seconds_setting(value: float | str | None, env: str, default: float, what: str, limit: float = 1e6) -> float:
    """A duration setting: ``value``, else ``$env``, else ``default``; ConfigError naming ``what``
    for anything but a number of seconds in [0, limit)."""
    raw = value if value is not None else os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        t = float(raw)
    except (TypeError, ValueError):
        t = float("nan")
    if not (t >= 0 and t < limit):
        raise ConfigError(f"{what} must be a number of seconds >= 0, got {raw!r}")
    return t


def lock_timeout_s(value: float | str | None = None) -> float:
    """Seconds to wait for another process's lock: ``value``, else $CTXSIM_LOCK_TIMEOUT, else 30."""
    return seconds_setting(value, "CTXSIM_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_S,
                           "lock timeout (--lock-timeout, CTXSIM_LOCK_TIMEOUT)")


@contextmanager
def lock_wait(url: str, timeout_s: float) -> Iterator[None]:
    """Reports (through lock_wait_notifier) a statement still blocked after LOCK_NOTICE_S."""
    notify = lock_wait_notifier
    if notify is None or timeout_s <= LOCK_NOTICE_S:
        yield
        return
    timer = threading.Timer(LOCK_NOTICE_S, notify, args=(url, timeout_s))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()

_waiting = threading.local()


def waiting_for_lock() -> bool:
    """True while this thread waits for another process's SQLite lock (nothing written yet)."""
    return getattr(_waiting, "depth", 0) > 0


def interrupt_lock_wait() -> bool:
    """For a SIGINT handler that defers Ctrl-C (so a write is never left half-done): ends this
    thread's wait for the lock with KeyboardInterrupt at its next try (within LOCK_POLL_MS), before
    any transaction began. False when no wait is under way (or it ends first: the write goes on)."""
    if not waiting_for_lock():
        return False
    _waiting.interrupted = True
    return True


def _is_locked(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "database is locked" in text or "database is busy" in text


def poll_lock(dbapi_conn, attempt: Callable[[], T], url: str, timeout_s: float) -> T:
    """``attempt()`` (a statement that may wait for another process's lock, e.g. BEGIN IMMEDIATE)
    under a busy timeout of LOCK_POLL_MS, retried until ``timeout_s``: the wait happens here in
    Python, not inside SQLite's C busy handler, so a KeyboardInterrupt is raised between tries
    instead of when the lock frees. After LOCK_NOTICE_S ``lock_wait_notifier`` hears of it, once.
    The last "database is locked" error is re-raised at the deadline (``retry_db`` words it)."""
    deadline = time.monotonic() + timeout_s
    notice_at = time.monotonic() + LOCK_NOTICE_S
    notify = lock_wait_notifier if timeout_s > LOCK_NOTICE_S else None
    cur = dbapi_conn.cursor()
    _waiting.depth = getattr(_waiting, "depth", 0) + 1
    _waiting.interrupted = False
    try:
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            cur.execute(f"PRAGMA busy_timeout={max(0, min(LOCK_POLL_MS, left_ms))}")
            try:
                return attempt()
            except Exception as e:
                if not _is_locked(e) or time.monotonic() >= deadline:
                    raise
            if _waiting.interrupted:  # interrupt_lock_wait(): Ctrl-C, nothing begun
                raise KeyboardInterrupt
            if notify is not None and time.monotonic() >= notice_at:
                said, notify = notify, None
                said(url, timeout_s)
    finally:
        _waiting.depth -= 1
        _waiting.interrupted = False
        try:
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")  # later statements: the full wait
            cur.close()
        except sqlite3.ProgrammingError:
            pass  # closed by the pool after a KeyboardInterrupt: nothing to restore


# Errors worth retrying: SQLite lock contention, PostgreSQL serialization failures / deadlocks.
_RETRYABLE_TEXT = ("database is locked", "database table is locked", "database is busy",
                   "could not serialize access", "deadlock detected")


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
                raise RegistryError(f"{what}: the registry is still locked by another process after "
                                    f"{timeout_s:g} s (--lock-timeout)") from e
            log.debug("%s: %s; retrying in %.3f s", what, e.orig, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
