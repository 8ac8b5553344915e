"""Entry point of the ``ctxsim`` command: a Typer app whose commands live one module per noun."""

from __future__ import annotations

import sys

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
) -> None:
    """ctxsim: reproduce, extend and beat the contextual loss (Liao et al., ICML 2023)."""


def _register() -> None:
    from ctxsim.cli import compare_cmd, data_cmd, extras_cmd, jobs_cmd, run_cmd, tui_cmd

    for mod in (run_cmd, jobs_cmd, data_cmd, compare_cmd, tui_cmd, extras_cmd):
        mod.register(app)


_register()


def main() -> None:
    """Console-script entry: user errors become one line and a non-zero exit, never a traceback."""
    from ctxsim.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, err_console
    from ctxsim.errors import CtxsimError

    try:
        app()
    except CtxsimError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
