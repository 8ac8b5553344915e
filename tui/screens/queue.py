"""Workers (alive by heartbeat, their GPUs) and the queue, with cancel / retry / priority keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Label

from ctxsim.registry import queries
from ctxsim.tui.messages import QueueLoaded, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.queue_table import QueueTable
from ctxsim.tui.widgets.status_line import StatusLine
from ctxsim.tui.widgets.workers_table import WorkersTable, worker_state

RECENT_FINISHED = 10  # failed/cancelled jobs listed under the queue, for retry


class QueueScreen(DashScreen):
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("x", "cancel", "Cancel job"),
        Binding("r", "retry", "Retry"),
        Binding("plus,equals_sign", "priority(1)", "Prio +"),
        Binding("minus", "priority(-1)", "Prio -"),
        Binding("n", "app.new_run", "New run"),
        Binding("enter", "open", "Detail"),
        Binding("tab", "focus_next", "Next table", show=False),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._summary = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Workers", classes="section")
        yield WorkersTable(id="workers")
        yield Label("Queue (running, queued by priority, recent failed/cancelled)", classes="section")
        yield QueueTable(id="queue")
        yield StatusLine()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(QueueTable).focus()
        self.poll()

    def load(self) -> None:
        reg = self.dash.read_reg
        self.post_message(QueueLoaded(queries.workers_table(reg), queries.queue_table(reg, RECENT_FINISHED)))

    def on_queue_loaded(self, msg: QueueLoaded) -> None:
        now = self.dash.clock()
        stale = self.dash.stale_after_s
        self.query_one(WorkersTable).show(msg.workers, now, stale)
        self.query_one(QueueTable).show(msg.jobs)
        states = [worker_state(w, now, stale) for w in msg.workers]
        queued = sum(j["status"] == "queued" for j in msg.jobs)
        running = sum(j["status"] == "running" for j in msg.jobs)
        self._summary = (f"{states.count('alive')} alive, {states.count('dead')} dead workers · "
                         f"{running} running · {queued} queued")
        dead = [w["id"] for w, s in zip(msg.workers, states) if s == "dead"]
        if dead:
            self._summary += " · no heartbeat from " + ", ".join(dead)

    def after_load(self, msg: RegistryStatus) -> None:
        self.status.set_info(" · ".join([self.dash.label, self._summary]))

    def _current(self):
        return self.query_one(QueueTable).current_id()

    def action_cancel(self) -> None:
        if (j := self._current()) is not None:
            self.dash.confirm_cancel(j)

    def action_retry(self) -> None:
        if (j := self._current()) is not None:
            self.dash.retry(j)

    def action_priority(self, delta: int) -> None:
        if (j := self._current()) is not None:
            self.dash.reprioritise(j, delta)

    def action_open(self) -> None:
        if (j := self._current()) is not None:
            self.dash.open_detail(j)

    def on_data_table_row_selected(self, event) -> None:  # noqa: ANN001 - enter on a row opens it
        if isinstance(event.data_table, QueueTable):
            event.stop()
            self.dash.open_detail(int(event.row_key.value))
