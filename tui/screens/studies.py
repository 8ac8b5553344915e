"""Tuning studies (``ctxsim tune``) with their best validation value so far; Enter opens the best trial's job."""

from __future__ import annotations

from typing import Any, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Label

from ctxsim.tui.messages import RegistryStatus, StudiesLoaded
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.status_line import StatusLine
from ctxsim.tui.widgets.studies_table import StudiesTable

NO_STUDIES = ("no tuning study yet: ctxsim tune --dataset D --loss L --study NAME --space \"lr=loguniform(1e-5,1e-3)\" "
              "--set val_classes=N")


class StudiesScreen(DashScreen):
    VIEW_NAME = "Tuning studies"
    HELP = ("The Optuna studies of `ctxsim tune` kept in this registry's database: trials by state, the best "
            "validation value so far (trials are ranked on validation classes only) and its parameters. "
            "Enter opens the best trial's job; `ctxsim tune show NAME` prints importances.")
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("enter", "open", "Best trial's job", key_display="⏎"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._reader: Optional[Any] = None  # ctxsim.tuning.StudyReader, made in the first read
        self._summary = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Tuning studies (ranked on validation classes)", classes="section", id="studies-label")
        yield StudiesTable(id="studies")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(StudiesTable).focus()
        self.poll()

    def load(self) -> None:
        from ctxsim.tuning import StudyReader

        if self._reader is None:
            self._reader = StudyReader(self.dash.read_reg)
        self.post_message(StudiesLoaded(self._reader.studies()))

    def on_studies_loaded(self, msg: StudiesLoaded) -> None:
        self.query_one(StudiesTable).show(msg.studies)
        running = sum((s.get("states") or {}).get("running", 0) for s in msg.studies)
        n = len(msg.studies)
        self._summary = (f"{n} {'study' if n == 1 else 'studies'} · {running} trial{'' if running == 1 else 's'} running"
                         if msg.studies else NO_STUDIES)

    def on_unmount(self) -> None:
        if self._reader is not None:
            self._reader.close()  # each visit opens its own storage: close its connections on leaving

    def after_load(self, msg: RegistryStatus) -> None:
        self.status.set_info(" · ".join([self._summary, self.dash.label]))

    def action_open(self) -> None:
        job = self.query_one(StudiesTable).current_best_job()
        if job is None:
            self.status.set_notice("this study has no complete trial yet")
            return
        self.dash.open_detail(job)

    def on_data_table_row_selected(self, event) -> None:  # - enter on a row
        if isinstance(event.data_table, StudiesTable):
            event.stop()
            self.action_open()
