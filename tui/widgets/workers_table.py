"""Workers, alive or not by the age of their heartbeat, with their GPUs and running jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from ctxsim.tui.format import fmt_duration, worker_state
from ctxsim.tui.widgets.keyed_table import KeyedTable

STATE_STYLE = {"alive": "bold green", "dead": "bold red", "stopped": "dim"}


class WorkersTable(KeyedTable):
    def __init__(self, **kw) -> None:
        super().__init__((("id", "Worker"), ("host", "Host"), ("pid", "PID"), ("state", "State"),
                          ("heartbeat", "Heartbeat"), ("gpus", "GPUs"), ("executor", "Executor"),
                          ("jobs", "Running jobs")), **kw)

    def show(self, workers: list[dict[str, Any]], now: datetime, stale_after_s: float) -> None:
        rows = []
        for w in workers:
            state = worker_state(w, now, stale_after_s)
            age = (now - w["heartbeat_at"]).total_seconds() if w.get("heartbeat_at") else None
            rows.append((w["id"], [w["id"], w["host"], str(w["pid"]), Text(state, style=STATE_STYLE[state]),
                                   (fmt_duration(age) + " ago") if age is not None else "never",
                                   w.get("gpus") or "", w.get("executor") or "",
                                   ",".join(str(j) for j in w.get("jobs") or [])]))
        self.sync(rows)
