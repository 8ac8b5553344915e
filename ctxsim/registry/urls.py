"""Naming a registry: which URL ``--db``/``CTXSIM_DB``/``./experiments.db`` resolves to, how
messages show it (passwords hidden), and the wording of "no registry here" and database errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from sqlalchemy.engine import make_url

from ctxsim.errors import NoRegistryError, one_line

DEFAULT_DB_FILE = "experiments.db"


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


def display_url(url: str) -> str:
    """How messages name a registry: a SQLite file's path, else the URL with its password hidden."""
    try:
        u = make_url(url)
    except Exception:
        return redact(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return u.database
    return redact(url)


def sqlite_file(u) -> Optional[Path]:
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" \
            or u.database.startswith("file:"):
        return None
    return Path(u.database)


def no_registry(path: Path | str) -> NoRegistryError:
    if isinstance(path, Path):
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
        if not shown.startswith(("/", ".")):
            shown = "./" + shown
    else:
        shown = path
    return NoRegistryError(f"no registry at {shown}: start one with `ctxsim run ...` or `ctxsim sweep ...`, "
                           "or pass --db (or set CTXSIM_DB)")


DAMAGED_TEXT = ("malformed", "not a database", "file is encrypted or is not a database", "database corrupt")


def damaged_registry(where: str, problem: str) -> str:
    """One line for a registry file SQLite finds damaged: the file, the problem, the way out."""
    return (f"registry {where} is damaged ({problem}): `ctxsim doctor --db {where}` lists what is wrong; "
            f"restore a backup ({Path(where).name}.bak-* beside it, if any) or salvage it with "
            f"`sqlite3 {where} .recover | sqlite3 recovered.db`")


def describe_db_error(url: str, e: BaseException) -> str:
    """One line for a database error raised while using an open registry (password hidden)."""
    orig = getattr(e, "orig", None) or e
    text = one_line(orig)
    if any(t in text.lower() for t in DAMAGED_TEXT):
        return damaged_registry(redact(url).removeprefix("sqlite:///"), text)
    if "readonly" in text.replace("-", "").replace(" ", "").lower():
        return f"registry {redact(url)} is read-only: {text}"
    if "database is locked" in text or "database is busy" in text:
        return f"registry {redact(url)} is locked by another process: {text} (waited --lock-timeout)"
    return f"registry {redact(url)}: {text}"


URL_FORMS = "a SQLite file (a path, or sqlite:////abs/path.db) or PostgreSQL (postgresql+psycopg://user@host:5432/db)"


def scheme_problem(u) -> Optional[str]:
    """Why a parsed URL names no database ctxsim can open (None: it can): only SQLite and PostgreSQL
    through psycopg (3) or psycopg2 are supported, and a misspelt scheme should say so at once."""
    import importlib.util

    backend, _, driver = u.drivername.partition("+")  # get_driver_name() would load the dialect
    if backend == "sqlite":
        return None
    if backend == "postgresql":
        module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "": "psycopg2"}.get(driver)
        if module is None:
            return f"unsupported PostgreSQL driver {driver!r}: use postgresql+psycopg://user@host:5432/db"
        if importlib.util.find_spec(module) is None:
            hint = "use postgresql+psycopg://..." if module == "psycopg2" else "pip install 'psycopg[binary]'"
            return f"the {module} driver is not installed ({hint})"
        return None
    return f"unknown scheme {u.drivername!r}; a registry is {URL_FORMS}"
