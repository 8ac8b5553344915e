"""Shared CLI plumbing: consoles, exit codes, one-line errors, JSON output, registry opening.

Keep this module light: no torch import here (``ctxsim --help`` must stay fast).
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console

# Exit codes scripts can rely on (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # a run or job failed
EXIT_USAGE = 2  # bad input: unknown dataset/loss/key, bad value, missing data
EXIT_REGISTRY = 3  # registry unreachable, locked, read-only, newer schema
EXIT_NOT_FOUND = 4  # no such job / file
EXIT_INTERRUPTED = 130

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Prints one clear line on stderr and exits with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def info(message: str) -> None:
    """Human messages go to stderr so that ``--json`` output stays pure."""
    err_console.print(message, highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def open_registry_or_exit(db: Optional[str], create: bool = True):
    """Opens the registry, turning any failure into one line and EXIT_REGISTRY."""
    from ctxsim.errors import RegistryError
    from ctxsim.registry.db import open_registry, redact, resolve_url

    try:
        return open_registry(db, create=create)
    except RegistryError as e:
        fail(str(e), EXIT_REGISTRY)
    except Exception as e:  # SQLAlchemy / driver errors: name the database, hide the password
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"cannot open registry {redact(resolve_url(db))}: {first}", EXIT_REGISTRY)


DbOption = typer.Option(None, "--db", envvar="CTXSIM_DB", help="Registry: SQLAlchemy URL or SQLite file (default ./experiments.db).")
