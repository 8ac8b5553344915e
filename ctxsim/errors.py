"""Errors that carry a message meant for the user and the exit code the CLI ends with.

Every user-facing error class lives here. The CLI prints ``one_line(e)`` and exits with
``e.exit_code``; the codes are the README's table, defined once below.
"""

from __future__ import annotations

# Exit codes scripts can rely on (README, "Exit codes"): the only place they are defined.
EXIT_OK = 0
EXIT_FAILED = 1  # a run or followed job failed
EXIT_USAGE = 2  # bad input: unknown dataset/loss/key, bad value, missing data
EXIT_REGISTRY = 3  # registry unreachable, locked, read-only, newer schema
EXIT_NOT_FOUND = 4  # no such job / file
EXIT_INTERRUPTED = 130


class CtxsimError(Exception):
    """Base class of user-facing errors: bad input, missing data, unusable registry."""

    exit_code: int = EXIT_USAGE


class ConfigError(CtxsimError, ValueError):
    """An invalid configuration value or an unknown override key."""

    exit_code = EXIT_USAGE


class DataError(CtxsimError):
    """Missing data root, missing or unreadable files, wrong layout."""

    exit_code = EXIT_USAGE


class RegistryError(CtxsimError):
    """The registry cannot be opened or used (unreachable, locked, read-only, newer schema)."""

    exit_code = EXIT_REGISTRY


class RegistryURLError(RegistryError):
    """The registry URL (``--db``/``CTXSIM_DB``) cannot be parsed or names no known database: bad input."""

    exit_code = EXIT_USAGE


class NotFoundError(CtxsimError):
    """Something the user named does not exist: job ids, a file."""

    exit_code = EXIT_NOT_FOUND


class NoRegistryError(RegistryError):
    """A read command found no registry at the place it looked (it never creates one)."""

    exit_code = EXIT_REGISTRY


class MissingFileError(NotFoundError, DataError):
    """An input file the user named does not exist (``baselines --import``, ``import-reference``)."""

    exit_code = EXIT_NOT_FOUND


class JobNotFoundError(NotFoundError):
    """No job with that id."""


class JobStateError(CtxsimError):
    """The job is not in a state that allows the operation (e.g. cancel a finished job)."""

    exit_code = EXIT_USAGE


class SlurmQueryError(CtxsimError):
    """Slurm did not answer a state query (slurmctld down or unreachable): states unknown this poll."""

    exit_code = EXIT_FAILED


class ReferenceFormatError(CtxsimError):
    """The file is not a model file of the reference implementation (or uses a class not allowed)."""

    exit_code = EXIT_USAGE


class WriteCancelled(CtxsimError):
    """The user cancelled a write that was waiting for the registry lock (the dashboard)."""

    exit_code = EXIT_INTERRUPTED


class RunFailedError(CtxsimError):
    """A run or a followed job failed."""

    exit_code = EXIT_FAILED


def exit_code_of(exc: BaseException) -> int:
    """The exit code an exception ends the CLI with: its own for ctxsim errors, else EXIT_FAILED."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    code = getattr(exc, "exit_code", None) if isinstance(exc, CtxsimError) else None
    return code if isinstance(code, int) else EXIT_FAILED


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """An exception worded as one line: the first non-empty line of its message, or its type name.

    ``with_type`` prefixes the type ("ValueError: bad value") for errors that are not the user's.
    An error re-raised by a DataLoader worker ("Caught DataError in DataLoader worker process 1." and
    the worker's traceback) is worded as the original error's own last line (it names the file)."""
    text = str(exc)
    if text.startswith("Caught ") and " in DataLoader worker process " in text.split("\n", 1)[0]:
        last = [line.strip() for line in text.splitlines() if line.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    for line in text.splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}" if with_type else line.strip()
    return type(exc).__name__
