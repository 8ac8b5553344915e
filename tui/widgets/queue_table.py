"""The queue: running jobs, then queued ones in claim order (priority, then age)."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text

from ctxsim.tui.format import STATUS_STYLE, run_cell
from ctxsim.tui.widgets.keyed_table import KeyedTable


class QueueTable(KeyedTable):
    def __init__(self, **kw) -> None:
        super().__init__((("id", "ID"), ("name", "Name"), ("run", "Dataset/loss/res"), ("status", "Status"),
                          ("seed", "Seed"), ("priority", "Priority"), ("attempts", "Attempts"), ("worker", "Worker"),
                          ("gpus", "GPUs")), **kw)

    def show(self, jobs: list[dict[str, Any]]) -> None:
        rows = []
        for j in jobs:
            run = run_cell(j["dataset"], j["loss"], j.get("resolution"))
            rows.append((str(j["id"]), [str(j["id"]), j.get("name") or "", run,
                                        Text(j["status"], style=STATUS_STYLE.get(j["status"], "")),
                                        "" if j.get("seed") is None else str(j["seed"]),
                                        str(j.get("priority") or 0),
                                        f"{j.get('attempts') or 0}/{j.get('max_attempts') or 0}",
                                        j.get("worker_id") or "", j.get("gpus") or ""]))
        self.sync(rows)

    def current_id(self) -> Optional[int]:
        k = self.current_key()
        return int(k) if k is not None else None
