"""``ctxsim tui``: the terminal dashboard, or ``--serve`` to open it in a local browser."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_USAGE, fail, info, open_registry_or_exit
from ctxsim.cli.options import DbOpt


def port_problem(host: str, port: int) -> Optional[str]:
    """None when ``host:port`` can be bound now, else one line saying why not (busy, privileged)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use; pick another with --port"
            if e.errno == errno.EACCES:
                return (f"port {port} on {host} is privileged (below 1024) and needs root; "
                        "pick a port of 1024 or more with --port")
            return f"cannot serve on {host}:{port}: {e.strerror or e}"
    return None


def tui(
    db: DbOpt = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the dashboard to a browser on 127.0.0.1 (textual-serve).")] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve.", min=1, max=65535)] = 8000,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between refreshes.", min=0.1)] = 2.0,
    stale_after: Annotated[float, typer.Option("--stale-after", help="Heartbeat age (s) after which a running job or worker shows as lost.", min=1.0)] = 60.0,
) -> None:
    """Live dashboard: runs, curves vs the paper, queue and workers, new runs."""
    # one clear line now rather than inside the full-screen app; an existing registry only (never
    # created here), opened without the write lock (the dashboard's reads use a read-only handle).
    # A file that cannot be written is opened read-only: the dashboard shows it and refuses its writes
    from ctxsim.registry.db import registry_is_readonly

    reg = open_registry_or_exit(db, create=False, readonly=registry_is_readonly(db))
    if serve:
        try:
            from textual_serve.server import Server
        except ImportError:
            reg.dispose()
            fail("--serve needs textual-serve: pip install 'ctxsim[serve]'", EXIT_USAGE)
        problem = port_problem("127.0.0.1", port)
        if problem:
            reg.dispose()
            fail(problem, EXIT_USAGE)
        # the served command reads the registry URL from the environment, not its argv
        os.environ["CTXSIM_DB"] = reg.url
        reg.dispose()
        command = f"{shlex.quote(sys.executable)} -m ctxsim.tui --poll {poll} --stale-after {stale_after}"
        info(f"serving the dashboard on http://127.0.0.1:{port} (Ctrl+C stops)")
        try:
            Server(command, host="127.0.0.1", port=port, title="ctxsim").serve()
        except OSError as e:  # lost the port between the check and the bind
            fail(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}", EXIT_USAGE)
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        reg.dispose()
        fail("ctxsim tui needs an interactive terminal (or use --serve for a browser)", EXIT_USAGE)
    from ctxsim.tui.app import CtxsimApp

    CtxsimApp(registry=reg, poll_interval=poll, stale_after_s=stale_after).run()


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("tui")(tui)
