"""Entry point of the ``ctxsim`` command: a Typer app whose commands live one module per noun.

Typer inspects every registered command's signature (and builds a pydantic adapter per option)
before it parses anything, and each command module imports its own helpers. ``main`` therefore
registers only the module that owns the command on the command line; ``ctxsim --help``, an unknown
command and ``app`` (the whole CLI, for tests and embedding) register all of them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import typer

from ctxsim import __version__

# Module (in ctxsim.cli) that registers each top-level command or group, in the order --help lists
# them. tests/test_cli_lazy.py checks it against what the modules really register.
COMMAND_MODULES: dict[str, str] = {
    "run": "run_cmd", "eval": "run_cmd",
    "sweep": "sweep_cmd",
    "worker": "worker_cmd",
    "ls": "jobs_cmd", "show": "jobs_cmd", "logs": "jobs_cmd", "cancel": "jobs_cmd", "retry": "jobs_cmd",
    "priority": "jobs_cmd", "rm": "jobs_cmd",
    "data": "data_cmd",
    "baselines": "compare_cmd", "compare": "compare_cmd", "report": "compare_cmd",
    "reproduce": "reproduce_cmd",
    "tui": "tui_cmd",
    "import-reference": "extras_cmd", "toy": "extras_cmd", "ablation-table": "extras_cmd",
    "tune": "tune_cmd",
    "doctor": "doctor_cmd",
    "export": "export_cmd",
}
# Root options that take a value: the word after them is not the command.
_ROOT_VALUE_OPTIONS = ("--lock-timeout",)


def _version(value: bool) -> None:
    if value:
        print(f"ctxsim {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    lock_timeout: Optional[float] = typer.Option(
        None, "--lock-timeout", envvar="CTXSIM_LOCK_TIMEOUT", min=0.0, max=86400.0,
        help="Seconds to wait for a registry locked by another process before giving up (exit 3); default 30."),
) -> None:
    """ctxsim: reproduce, extend and beat the contextual loss (Liao et al., ICML 2023)."""
    from ctxsim.cli.common import set_lock_timeout

    set_lock_timeout(lock_timeout)


def _wrap_commands(group: typer.Typer) -> None:
    """Every command and group callback maps library errors to one line and an exit code."""
    from ctxsim.cli.common import exits_on_error

    for cmd in group.registered_commands:
        cmd.callback = exits_on_error(cmd.callback)
    if group.registered_callback is not None and group.registered_callback.callback is not None:
        group.registered_callback.callback = exits_on_error(group.registered_callback.callback)
    for sub in group.registered_groups:
        _wrap_commands(sub.typer_instance)


def build_app(modules: Optional[list[str]] = None) -> typer.Typer:
    """The root app with the commands of ``modules`` (names in ctxsim.cli), or of every module."""
    app = typer.Typer(
        name="ctxsim",
        help="Contextual-similarity metric learning: train, queue, watch and compare runs against the paper.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    for name in modules if modules is not None else list(dict.fromkeys(COMMAND_MODULES.values())):
        importlib.import_module(f"ctxsim.cli.{name}").register(app)
    _wrap_commands(app)
    return app


def command_word(args: list[str]) -> Optional[str]:
    """The command named on a command line (``args`` without the program), or None before one."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in _ROOT_VALUE_OPTIONS:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return a
    return None


_full_app: Optional[typer.Typer] = None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole CLI, built on first use (``from ctxsim.cli.main import app``)
        global _full_app
        if _full_app is None:
            _full_app = build_app()
        return _full_app
    raise AttributeError(name)


def main() -> None:
    """Console-script entry: user errors become one line and a non-zero exit, never a traceback."""
    from ctxsim.cli.common import err_console
    from ctxsim.errors import EXIT_INTERRUPTED, CtxsimError, one_line

    module = COMMAND_MODULES.get(command_word(sys.argv[1:]) or "")
    app = build_app([module] if module else None)
    try:
        app(prog_name="ctxsim")
    except CtxsimError as e:  # each error class carries its exit code (ctxsim.errors, README)
        err_console.print(f"[bold red]error:[/] {one_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a database error a command did not word itself: still one line, exit 3
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is None or not isinstance(e, sa_exc.DBAPIError):
            raise
        from ctxsim.errors import EXIT_REGISTRY

        err_console.print(f"[bold red]error:[/] registry: {one_line(e.orig or e)}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_REGISTRY)


if __name__ == "__main__":
    main()
