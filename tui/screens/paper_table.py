"""The paper's table (224 or 256) as ``ctxsim compare --table`` prints it: published number and ours
(mean ± 95% CI over comparable seeds, n) per cell, or queued / running / missing."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Header, Static

from ctxsim.registry.states import JobStatus
from ctxsim.report.table import CELL_MISSING, table_data
from ctxsim.tui.messages import RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.paper_table import PaperTable
from ctxsim.tui.widgets.status_line import StatusLine

TABLE_RESOLUTIONS = (224, 256)


class PaperTableLoaded(Message):
    """One paper table read in a thread (``ctxsim.report.table.table_data``)."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self.data = data


def cell_counts(data: dict[str, Any]) -> dict[str, int]:
    """How many cells of the table are in each state (done, running, queued, missing)."""
    counts = {JobStatus.DONE: 0, JobStatus.RUNNING: 0, JobStatus.QUEUED: 0, CELL_MISSING: 0}
    for row in data["rows"]:
        for cell in row["cells"].values():
            counts[cell["state"]] = counts.get(cell["state"], 0) + 1
    return counts


class PaperTableScreen(DashScreen):
    VIEW_NAME = "Paper table"
    HELP = ("The paper's table layout, as `ctxsim compare --table` prints it: per method and dataset the "
            "published number and ours (mean ± half width of the 95% interval over comparable seeds, n), "
            "or the state of the cell's runs (queued, running, missing). `ctxsim reproduce` queues the "
            "missing cells.")
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back"),
                Binding("t", "toggle", "Table 224/256")]

    def __init__(self, resolution: int = 224, **kw: Any) -> None:
        super().__init__(**kw)
        self.resolution = resolution if resolution in TABLE_RESOLUTIONS else TABLE_RESOLUTIONS[0]
        self.data: Optional[dict[str, Any]] = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="paper-title", classes="section")
        yield PaperTable(id="paper-table")
        with VerticalScroll(id="paper-notes"):
            yield Static("", id="paper-notes-text")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(PaperTable).focus()
        self.poll()

    def load(self) -> None:
        self.post_message(PaperTableLoaded(table_data(self.dash.read_reg, self.resolution)))

    def on_paper_table_loaded(self, msg: PaperTableLoaded) -> None:
        if msg.data["resolution"] != self.resolution:  # a read of the other table, finished after a toggle
            return
        self.data = msg.data
        notes = self.query_one(PaperTable).show(msg.data)
        self.query_one("#paper-title", Static).update(
            f"Table {msg.data['resolution']} — {msg.data['title']}: {msg.data['metric']}")
        self.query_one("#paper-notes-text", Static).update(Text("\n".join(notes), style="dim"))

    def after_load(self, msg: RegistryStatus) -> None:
        parts = [self.dash.label, f"table {self.resolution}"]
        if self.data is not None and self.data["resolution"] == self.resolution:
            c = cell_counts(self.data)
            total = sum(c.values())
            parts.append(f"{c['done']}/{total} cells filled")
            parts += [f"{c[k]} {k}" for k in (JobStatus.RUNNING, JobStatus.QUEUED) if c[k]]
        self.status.set_info(" · ".join(parts))

    def action_toggle(self) -> None:
        i = TABLE_RESOLUTIONS.index(self.resolution)
        self.resolution = TABLE_RESOLUTIONS[(i + 1) % len(TABLE_RESOLUTIONS)]
        self.status.set_notice(f"table {self.resolution}")
        self.poll_now()

    def poll_now(self) -> None:
        """Reads at once, or right after a read still running (a toggle must not be lost)."""
        if self._in_flight:
            self.set_timer(0.05, self.poll_now)
        else:
            self.poll()
