"""The main screen: all runs, filterable and sortable, live."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, Select

from ctxsim.registry import queries
from ctxsim.tui.format import RUN_COLUMNS, run_row
from ctxsim.tui.messages import RegistryStatus, RunsLoaded
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.filter_bar import FilterBar
from ctxsim.tui.widgets.runs_table import RunsTable
from ctxsim.tui.widgets.status_line import StatusLine
from ctxsim.tui.widgets.workers_table import worker_state

SUMMARY_KEYS = ("R@1", "MAP@R", "train/loss")
PAPER_RELOAD_EVERY = 30  # polls between reloads of the (rarely changing) reference numbers
FULL_RELOAD_EVERY = 30  # polls between full re-reads of every job (the rest are incremental)
UPDATED_AT_MARGIN = timedelta(seconds=5)  # writers' clocks may disagree a little


class RunsScreen(DashScreen):
    BINDINGS = [
        Binding("enter", "open", "Detail", show=True, priority=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("w", "app.queue", "Queue"),
        Binding("n", "app.new_run", "New run"),
        Binding("x", "cancel", "Cancel job"),
        Binding("r", "retry", "Retry"),
        Binding("plus,equals_sign", "priority(1)", "Prio +", show=False),
        Binding("minus", "priority(-1)", "Prio -", show=False),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("slash", "search", "Search"),
        Binding("f", "filter", "Filter", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._paper: dict = {}
        self._paper_loaded = False
        self._polls = 0
        self._notes: list[str] = []
        # incremental state, touched only by the (single) read thread
        self._jobs: dict[int, dict] = {}
        self._rows: dict = {}
        self._updated_at = None
        self._metric_id = None

    def compose(self) -> ComposeResult:
        from ctxsim.train.recipes import DATASETS, LOSS_NAMES

        yield Header()
        yield FilterBar(DATASETS, LOSS_NAMES)
        yield RunsTable(id="runs")
        yield StatusLine()
        yield Footer()

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.table.sort_by("id", reverse=True)
        self.poll()

    # --- reading (thread) ---------------------------------------------------------------------
    def load(self) -> None:
        """Incremental: only jobs whose row changed (jobs.updated_at) or that got new metric points
        (metrics.id) are re-read, plus new ones; running jobs are re-formatted for the clock; a
        full re-read every FULL_RELOAD_EVERY polls (and the first time) catches anything else."""
        reg = self.dash.read_reg
        reload_paper = not self._paper_loaded or self._polls % PAPER_RELOAD_EVERY == 0 \
            or self.dash.baselines_changed
        if reload_paper:
            self.dash.baselines_changed = False
            self._paper = queries.paper_numbers(reg)
            self._paper_loaded = True
        full = not self._jobs or self._polls % FULL_RELOAD_EVERY == 0
        self._polls += 1
        if full:
            ch = queries.runs_changes(reg)
            self._jobs = {j["id"]: j for j in queries.runs_table(reg, summary_keys=SUMMARY_KEYS)}
            fetched = set(self._jobs)
        else:
            since = self._updated_at - UPDATED_AT_MARGIN if self._updated_at is not None else None
            ch = queries.runs_changes(reg, since, self._metric_id)
            ids = set(ch["ids"])
            for gone in set(self._jobs) - ids:
                del self._jobs[gone]
                self._rows.pop(gone, None)
            fetched = (ids - set(self._jobs)) | (ch["changed"] & ids)
            if fetched:
                for j in queries.runs_table(reg, ids=fetched, summary_keys=SUMMARY_KEYS):
                    self._jobs[j["id"]] = j
        self._updated_at, self._metric_id = ch["updated_at"], ch["metric_id"]
        now = self.dash.clock()
        stale = self.dash.stale_after_s
        redo = set(self._jobs) if (full or reload_paper) else (fetched | ch["running"]) & set(self._jobs)
        for jid in redo:
            self._rows[jid] = run_row(self._jobs[jid], self._paper, now, stale)
        workers = queries.workers_table(reg)
        self.post_message(RunsLoaded(list(self._rows.values()), 0.0, self._notes_for(workers, now),
                                     None if (full or reload_paper) else redo))

    def _notes_for(self, workers: list, now) -> list[str]:  # noqa: ANN001
        stale = self.dash.stale_after_s
        counts = Counter(j["status"] for j in self._jobs.values())
        notes = [f"{len(self._jobs)} runs"] + [f"{counts[s]} {s}" for s in (
            "running", "queued", "done", "failed", "cancelled") if counts[s]]
        n_stale = sum(r.stale for r in self._rows.values())
        if n_stale:
            notes.append(f"{n_stale} running without heartbeat")
        alive = [w for w in workers if worker_state(w, now, stale) == "alive"]
        notes.append(f"{len(alive)} worker{'s' if len(alive) != 1 else ''} alive")
        for w in workers:
            if worker_state(w, now, stale) == "dead":
                notes.append(f"worker {w['id']} dead (no heartbeat)")
        return notes

    # --- UI -----------------------------------------------------------------------------------
    def on_runs_loaded(self, msg: RunsLoaded) -> None:
        self.table.set_rows(msg.rows, msg.changed)
        self._notes = msg.notes

    def after_load(self, msg: RegistryStatus) -> None:
        parts = [self.dash.label] + self._notes
        if self.dash.show_timings and msg.elapsed_ms is not None:
            parts.append(f"read {msg.elapsed_ms:.0f} ms")
        self.status.set_info(" · ".join(parts))

    def on_filter_bar_changed(self, msg: FilterBar.Changed) -> None:
        self.table.set_filter(msg.filter)

    def on_runs_table_opened(self, msg: RunsTable.Opened) -> None:
        self.dash.open_detail(msg.job_id)

    def action_open(self) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.open_detail(jid)

    def action_mark(self) -> None:
        jid = self.table.toggle_mark()
        if jid is not None:
            self.status.set_notice(f"{len(self.table.marked)} marked for compare (c)")

    def action_compare(self) -> None:
        ids = sorted(self.table.marked) or ([self.table.current_id()] if self.table.current_id() else [])
        if ids:
            self.dash.open_compare(ids)

    def action_cancel(self) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.confirm_cancel(jid)

    def action_retry(self) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.retry(jid)

    def action_priority(self, delta: int) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.reprioritise(jid, delta)

    def action_sort_next(self) -> None:
        keys = [k for k, _ in RUN_COLUMNS]
        nxt = keys[(keys.index(self.table.sort_key) + 1) % len(keys)]
        self.table.sort_by(nxt)
        self.status.set_notice(f"sorted by {dict(RUN_COLUMNS)[nxt]}")

    def action_sort_reverse(self) -> None:
        self.table.sort_by(self.table.sort_key, reverse=not self.table.sort_reverse)

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_filter(self) -> None:
        self.query_one("#f-status", Select).focus()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).set_values(status="", dataset="", loss="", text="")
        self.table.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.table.focus()
