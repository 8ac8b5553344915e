"""The dashboard's writes: off the UI thread, retried while the registry is locked, cancellable.

``CancellableWrites(reg, cancel)`` is a Registry whose ``run`` (what every ``ctxsim.registry.jobs``
write goes through) retries lock contention in short waits and gives up with ``WriteCancelled`` as
soon as ``cancel`` is set, so a write stuck behind a lock never hangs a thread for long after the
user cancelled it. On SQLite it uses its own engine with a short lock timeout.

A SQLite registry the dashboard cannot write (``ctxsim.registry.db.registry_is_readonly``) is opened
read-only and its writes are refused with READONLY_NOTICE.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError

from ctxsim.errors import WriteCancelled
from ctxsim.registry.db import Registry, is_retryable, make_engine

T = TypeVar("T")
UI_BUSY_TIMEOUT_MS = 250  # each try waits this long for the lock, then the cancel flag is checked
WAIT_NOTICE_AFTER_S = 1.0


READONLY_NOTICE = "read-only registry"


def ui_write_engine(reg: Registry):
    """The engine for the dashboard's writes: the registry's own, or on SQLite a second one whose
    tries wait UI_BUSY_TIMEOUT_MS for the lock instead of the writers' long timeout."""
    if not reg.is_sqlite:
        return reg.engine
    return make_engine(reg.url, lock_timeout=UI_BUSY_TIMEOUT_MS / 1000)


class CancellableWrites(Registry):
    def __init__(self, reg: Registry, engine, cancel: threading.Event) -> None:
        super().__init__(reg.url, engine)
        self.cancel = cancel

    def run(self, fn: Callable, what: str = "registry write"):
        delay = 0.02
        while True:
            if self.cancel.is_set():
                raise WriteCancelled(f"{what}: cancelled while waiting for the registry lock")
            try:
                with self.Session.begin() as s:
                    return fn(s)
            except DBAPIError as e:
                if not is_retryable(e):
                    raise
                self.cancel.wait(delay)
                delay = min(delay * 2, 0.25)


__all__ = ["CancellableWrites", "READONLY_NOTICE", "WAIT_NOTICE_AFTER_S", "WriteCancelled",
           "ui_write_engine"]
