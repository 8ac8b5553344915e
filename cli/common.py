"""Shared CLI plumbing: consoles, exit codes, one-line errors, JSON output, registry opening.

Keep this module light: no torch import here (``ctxsim --help`` must stay fast).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from typing import Any, Callable, NoReturn, Optional, TypeVar

import typer
from rich.console import Console

# Exit codes scripts can rely on (README): defined once, in ctxsim.errors, with the error classes.
from ctxsim.errors import (  # noqa: F401  (re-exported for the command modules)
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REGISTRY,
    EXIT_USAGE,
    exit_code_of,
    one_line,
)

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Prints one clear line on stderr and exits with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def fail_on(exc: BaseException) -> NoReturn:
    """Prints an exception as one line and exits with its own exit code (ctxsim.errors)."""
    fail(one_line(exc), exit_code_of(exc))


_opened_url = ""  # the registry the running command opened: database errors name it


def exits_on_error(command: F) -> F:
    """Every command runs under this (cli.main wraps them all): a library error (CtxsimError) becomes
    one line and the exit code its class carries; a database error, one line naming the registry
    (password hidden) and exit 3. Commands catch only what they word differently."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ctxsim.errors import CtxsimError

        try:
            return command(*args, **kwargs)
        except CtxsimError as e:
            fail_on(e)
        except Exception as e:
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is None or not isinstance(e, sa_exc.DBAPIError):
                raise
            from ctxsim.registry.urls import describe_db_error

            fail(describe_db_error(_opened_url, e), EXIT_REGISTRY)

    return wrapper  # type: ignore[return-value]


def info(message: str) -> None:
    """Human messages go to stderr so that ``--json`` output stays pure."""
    err_console.print(message, highlight=False, soft_wrap=True)


_PERCENT_METRIC = re.compile(r"^(train_)?(R@\d+|MAP@R|RP|mAP)(@epoch\d+)?$")


def is_percent_metric(key: str) -> bool:
    """Retrieval metrics (R@K, MAP@R, RP, mAP): stored and in JSON as fractions (0..1), shown in
    human output as percent (93.75), the unit of `run`, `compare`, `ls`, `show` and the dashboard."""
    return bool(_PERCENT_METRIC.match(key))


def fmt_metric(key: str, value: Optional[float], digits: int = 2) -> str:
    """A metric value for human output: percent for retrieval metrics, 4 significant digits else."""
    if value is None:
        return ""
    if is_percent_metric(key):
        return f"{100 * value:.{digits}f}"
    return f"{value:.4g}"


def table_console() -> Console:
    """Where tables go: the shared console on a terminal; through a pipe or into a file, a console
    that never shortens a value (no "…", no 80-column cut), so ``ls | grep`` sees whole names."""
    if console.is_terminal:
        return console
    return Console(width=100_000, highlight=False, no_color=True)


def print_rows(header: list[str], rows: list[list[str]], fmt: str = "table", title: Optional[str] = None,
               no_wrap: tuple[str, ...] = ()) -> None:
    """A table of plain strings: rich on a terminal (full values through a pipe), or ``fmt="tsv"``:
    a header line and one line per row, tab-separated (tabs and newlines in values become spaces)."""
    if fmt == "tsv":
        def clean(v: str) -> str:
            return re.sub(r"[\t\r\n]+", " ", v)

        sys.stdout.write("\t".join(header) + "\n")
        sys.stdout.writelines("\t".join(clean(v) for v in r) + "\n" for r in rows)
        sys.stdout.flush()
        return
    from rich.table import Table

    out = table_console()
    t = Table(title=title, show_edge=False)
    for c in header:
        t.add_column(c, no_wrap=c in no_wrap or not out.is_terminal)
    for r in rows:
        t.add_row(*r)
    out.print(t)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


_lock_timeout: Optional[float] = None  # the root's --lock-timeout (else $CTXSIM_LOCK_TIMEOUT, else 30 s)


def set_lock_timeout(seconds: Optional[float]) -> None:
    """The root callback's ``--lock-timeout``: how long commands wait for another process's lock."""
    global _lock_timeout
    _lock_timeout = seconds


def _say_locked(url: str, timeout_s: float) -> None:
    from ctxsim.registry.db import display_url

    err_console.print(f"[yellow]waiting:[/] the registry {display_url(url)} is locked by another process; "
                      f"waiting up to {timeout_s:g} s (--lock-timeout)", highlight=False, soft_wrap=True)


def open_registry_or_exit(db: Optional[str], create: bool = True, readonly: bool = False):
    """Opens the registry, turning any failure into one line: EXIT_REGISTRY, or EXIT_USAGE for a
    URL that cannot be parsed (RegistryURLError) or a bad --lock-timeout.

    ``readonly`` for the read commands (ls, show, compare, tui): no write lock, nothing created
    (a missing registry says where it looked and how to start one), a read-only file works.
    A wait for another process's lock is said on stderr after a second."""
    from ctxsim.errors import CtxsimError
    from ctxsim.registry import db as registry_db
    from ctxsim.registry import locks

    global _opened_url
    locks.lock_wait_notifier = _say_locked
    try:
        reg = registry_db.open_registry(db, create=create, readonly=readonly, lock_timeout=_lock_timeout)
        _opened_url = reg.url
        return reg
    except CtxsimError as e:
        fail_on(e)
    except Exception as e:  # SQLAlchemy / driver errors: name the database, hide the password
        fail(f"cannot open registry {registry_db.redact(registry_db.resolve_url(db))}: {one_line(e)}", EXIT_REGISTRY)

