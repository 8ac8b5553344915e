"""``python -m ctxsim.tui [--db URL]``: the dashboard (what ``ctxsim tui --serve`` runs per browser)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ctxsim.tui")
    p.add_argument("--db", default=None, help="registry URL or SQLite file (default $CTXSIM_DB, ./experiments.db)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--stale-after", type=float, default=60.0, help="heartbeat age (s) shown as lost")
    a = p.parse_args(argv)
    from ctxsim.errors import CtxsimError, one_line
    from ctxsim.tui.app import CtxsimApp

    try:
        app = CtxsimApp(db=a.db, poll_interval=a.poll, stale_after_s=a.stale_after)
    except CtxsimError as e:  # a missing or unusable registry: one line, not a traceback
        print(f"error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    app.run()


if __name__ == "__main__":
    main()
