"""Entry point of the ``ctxsim`` command: a Typer app whose commands live one module per noun."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ctxsim import __version__

app = typer.Typer(
    name="ctxsim",
    help="Contextual-similarity metric learning: train, queue, watch and compare runs against the paper.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"ctxsim {__version__}")
        raise typer.Exit()


@app.callback()
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


def _register() -> None:
    from ctxsim.cli import (
        compare_cmd,
        data_cmd,
        doctor_cmd,
        export_cmd,
        extras_cmd,
        jobs_cmd,
        reproduce_cmd,
        run_cmd,
        sweep_cmd,
        tui_cmd,
        tune_cmd,
        worker_cmd,
    )

    for mod in (run_cmd, sweep_cmd, worker_cmd, jobs_cmd, data_cmd, compare_cmd, reproduce_cmd, tui_cmd, extras_cmd,
                tune_cmd, doctor_cmd, export_cmd):
        mod.register(app)
    _wrap_commands(app)


_register()


def main() -> None:
    """Console-script entry: user errors become one line and a non-zero exit, never a traceback."""
    from ctxsim.cli.common import err_console
    from ctxsim.errors import EXIT_INTERRUPTED, CtxsimError, one_line

    try:
        app()
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
