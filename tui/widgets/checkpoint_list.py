"""A run's checkpoint files and its lifecycle events (claimed, checkpoint, requeued, done...)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ctxsim.tui.widgets.keyed_table import KeyedTable


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class CheckpointList(KeyedTable):
    def __init__(self, **kw) -> None:
        super().__init__((("name", "File"), ("size", "Size"), ("mtime", "Modified (UTC)")), **kw)

    def show(self, files: list[dict[str, Any]]) -> None:
        self.sync([(f["path"], [f["name"], _size(f["bytes"]),
                                datetime.fromtimestamp(f["mtime"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")])
                   for f in files])


class EventList(KeyedTable):
    def __init__(self, **kw) -> None:
        super().__init__((("time", "Time (UTC)"), ("kind", "Event"), ("message", "Message")), **kw)

    def show(self, events: list[dict[str, Any]]) -> None:
        self.sync([(str(e["id"]), [e["time"].strftime("%Y-%m-%d %H:%M:%S") if e["time"] else "",
                                   e["kind"], (e["message"] or "").splitlines()[0] if e["message"] else ""])
                   for e in events])
