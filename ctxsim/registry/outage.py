"""Riding out a registry that is away for a while: a PostgreSQL server restarting or unreachable,
a SQLite file locked by another process for longer than the lock timeout.

A training job must not lose hours of work to a two-second server restart: its metric sink keeps
what it could not write and tries again with backoff (``Outage``), and the job's final status
write waits (``call_through_outage``), both for at most the outage budget
(``CTXSIM_REGISTRY_OUTAGE``, default 300 s). The sink is idempotent, so a retried write never
doubles a point. Anything else (a corrupt file, a missing table, a bug) is raised at once.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from ctxsim.errors import RegistryError
from ctxsim.registry.locks import is_retryable, seconds_setting

log = logging.getLogger(__name__)

DEFAULT_OUTAGE_S = 300.0
MAX_RETRY_WAIT_S = 30.0
T = TypeVar("T")


def outage_budget_s(value: float | str | None = None) -> float:
    """Seconds a job rides out an unreachable registry: ``value``, else $CTXSIM_REGISTRY_OUTAGE, else 300."""
    return seconds_setting(value, "CTXSIM_REGISTRY_OUTAGE", DEFAULT_OUTAGE_S, "CTXSIM_REGISTRY_OUTAGE", limit=1e7)


def is_unavailable(exc: BaseException) -> bool:
    """True when the registry is away rather than wrong: a PostgreSQL connection refused, closed or
    still starting up; a lost connection; a SQLite lock held past the lock timeout."""
    if isinstance(exc, RegistryError):
        return isinstance(exc.__cause__, DBAPIError) and is_retryable(exc.__cause__)
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    return isinstance(exc, (OperationalError, InterfaceError)) and type(orig).__module__.startswith("psycopg")


class Outage:
    """The state of one writer's outage: since when the registry is away and when to try next."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self.since: Optional[float] = None
        self.failures = 0
        self.retry_at = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        """Whether a write may be tried now (always, unless waiting out a backoff)."""
        return self.since is None or self.clock() >= self.retry_at

    def failed(self, exc: BaseException, what: str) -> float:
        """Records a failed try; returns the seconds to wait before the next one. Raises ``exc``
        when it is not an outage, or when the outage has lasted longer than the budget."""
        if not is_unavailable(exc):
            raise exc
        now = self.clock()
        if self.since is None:
            self.since = now
            log.warning("%s: the registry is unreachable (%s); keeping the data and retrying for up to %.0f s",
                        what, _first_line(exc), self.budget_s)
        if now - self.since > self.budget_s:
            raise RegistryError(f"{what}: the registry stayed unreachable for {now - self.since:.0f} s "
                                f"(CTXSIM_REGISTRY_OUTAGE={self.budget_s:g}): {_first_line(exc)}") from exc
        self.failures += 1
        wait = min(MAX_RETRY_WAIT_S, 0.5 * 2 ** (self.failures - 1), max(0.0, self.since + self.budget_s - now) + 0.01)
        self.retry_at = now + wait
        return wait

    def recovered(self, what: str) -> None:
        if self.since is not None:
            log.warning("%s: the registry is back after %.0f s; nothing was lost", what, self.clock() - self.since)
        self.since, self.failures, self.retry_at = None, 0, 0.0


def call_through_outage(fn: Callable[[], T], what: str, budget_s: Optional[float] = None,
                        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """``fn()``, tried again with backoff while the registry is unreachable, for up to ``budget_s``."""
    outage = Outage(outage_budget_s() if budget_s is None else budget_s, clock)
    while True:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - Outage.failed re-raises all but an outage
            sleep(outage.failed(e, what))
            continue
        outage.recovered(what)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
