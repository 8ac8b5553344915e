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

# Exit codes scripts can rely on (README): defined once, in ctxsim.errors, with the error classes.
from ctxsim.names import fmt_metric, is_percent_metric  # noqa: F401  (the command modules import them from here)

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Prints one clear line on stderr and exits with ``code`` (the message is text, never markup:
    ``pip install "ctxsim[wandb]"`` keeps its brackets)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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




def table_console(stderr: bool = False) -> Console:
    """Where tables go: the shared console on a terminal; through a pipe or into a file, a console
    that never shortens a value (no "…", no 80-column cut), so ``ls | grep`` sees whole names.
    ``stderr``: the same for tables shown beside a command's output (sweep's grid)."""
    shared = err_console if stderr else console
    if shared.is_terminal:
        return shared
    return Console(width=100_000, highlight=False, no_color=True, stderr=stderr)


def print_rows(header: list[str], rows: list[list[str]], fmt: str = "table", title: Optional[str] = None,
               no_wrap: tuple[str, ...] = (), styles: Optional[dict[str, dict[str, str]]] = None) -> None:
    """A table of plain strings (no markup). ``fmt="tsv"``: a header line and one line per row,
    tab-separated (tabs and newlines in values become spaces). Else aligned columns: through a pipe
    plain text with whole values; on a terminal coloured by ``styles`` (column -> value -> rich
    style), and laid out by rich (wrapping cells) only when the rows are wider than the terminal.
    Aligning by hand takes milliseconds where rich's table takes a second for 1,000 rows."""
    def clean(v: str) -> str:
        return re.sub(r"[\t\r\n]+", " ", v)

    if fmt == "tsv":
        sys.stdout.write("\t".join(header) + "\n")
        sys.stdout.writelines("\t".join(clean(v) for v in r) + "\n" for r in rows)
        sys.stdout.flush()
        return
    from rich.cells import cell_len
    from rich.text import Text

    out = table_console()
    cells = [[clean(v) for v in r] for r in rows]
    widths = [max([cell_len(h)] + [cell_len(r[i]) for r in cells]) for i, h in enumerate(header)]
    styles = styles or {}
    if out.is_terminal and sum(widths) + 2 * (len(widths) - 1) > out.width:
        from rich.table import Table

        t = Table(title=title, show_edge=False)
        for c in header:
            t.add_column(c, no_wrap=c in no_wrap)
        for r in cells:
            t.add_row(*[Text(v, style=styles.get(h, {}).get(v, "")) for h, v in zip(header, r)])
        out.print(t)
        return

    def line(values: list[str], header_line: bool = False) -> Text:
        text = Text(no_wrap=True, overflow="ignore")
        for i, (h, v) in enumerate(zip(header, values)):
            style = "bold" if header_line else styles.get(h, {}).get(v, "")
            text.append(v + " " * (widths[i] - cell_len(v)) + ("  " if i < len(values) - 1 else ""), style)
        text.rstrip()
        return text

    if not out.is_terminal:  # plain text: no styles, no layout engine
        if title:
            sys.stdout.write(title + "\n")
        pad = [lambda v, w=w: v + " " * (w - cell_len(v)) for w in widths]
        sys.stdout.write("  ".join(p(h) for p, h in zip(pad, header)).rstrip() + "\n")
        sys.stdout.write("  ".join("─" * w for w in widths) + "\n")
        sys.stdout.writelines("  ".join(p(v) for p, v in zip(pad, r)).rstrip() + "\n" for r in cells)
        sys.stdout.flush()
        return
    if title:
        out.print(title, style="italic", highlight=False)
    out.print(line(header, header_line=True))
    out.print(Text("  ".join("─" * w for w in widths), style="dim"))
    for r in cells:
        out.print(line(r))


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


def _refuse_missing_folder(db: str) -> None:
    """An explicit --db (or $CTXSIM_DB) SQLite file whose folder does not exist is a typo far more
    often than a wish: exit 2, nothing created. Only the default ./experiments.db appears unasked."""
    from sqlalchemy.engine import make_url

    from ctxsim.registry.urls import resolve_url, sqlite_file

    try:
        u = make_url(resolve_url(db))
    except Exception:  # noqa: BLE001 - an unparsable URL: open_registry words it (exit 2)
        return
    path = sqlite_file(u)
    if path is not None and (u.query or {}).get("mode") != "ro" and not path.parent.is_dir():
        fail(f"registry {path}: folder {path.parent} does not exist (create it first, or check --db)", EXIT_USAGE)


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
    if db and create and not readonly:
        _refuse_missing_folder(db)
    try:
        reg = registry_db.open_registry(db, create=create, readonly=readonly, lock_timeout=_lock_timeout)
        _opened_url = reg.url
        return reg
    except CtxsimError as e:
        fail_on(e)
    except Exception as e:  # SQLAlchemy / driver errors: name the database, hide the password
        fail(f"cannot open registry {registry_db.redact(registry_db.resolve_url(db))}: {one_line(e)}", EXIT_REGISTRY)

