"""The main screen: all runs, filterable and sortable, live; warnings first on the status line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Input, Select

from ctxsim.registry.states import JobStatus
from ctxsim.tui.data import FULL_RELOAD_EVERY, RunsCache
from ctxsim.tui.format import RUN_COLUMNS
from ctxsim.tui.messages import RegistryStatus, RunsLoaded
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.filter_bar import FilterBar
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.runs_table import RunsTable
from ctxsim.tui.widgets.status_line import StatusLine


class RunsScreen(DashScreen):
    VIEW_NAME = "Runs"
    HELP = ("Every job in the registry, live. The ID column stays on the left; status, epoch, best R@1, "
            "Δ paper and ETA are always shown, other columns appear as the terminal widens. Warnings "
            "(dead workers, jobs without heartbeat) come first on the status line.")
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("enter", "open", "Detail", key_display="⏎"),
        Binding("space", "mark", "Mark", key_display="␣"),
        Binding("c", "compare", "Compare"),
        Binding("s", "sort_next", "Sort"),
        Binding("w", "app.queue", "Queue"),
        Binding("n", "app.new_run", "New run"),
        Binding("l", "log", "Log (follow)", show=False),
        Binding("d", "diff", "Diff configs of 2 marked", show=False),
        Binding("y", "copy", "Copy run command", show=False),
        Binding("e", "clone", "Clone into new-run form", show=False),
        Binding("x", "cancel", "Cancel job", show=False),
        Binding("r", "retry", "Retry", show=False),
        Binding("plus,equals_sign", "priority(1)", "Priority +1", show=False),
        Binding("minus", "priority(-1)", "Priority -1", show=False),
        Binding("S", "sort_reverse", "Reverse sort", show=False),
        Binding("f", "filter", "Filter by status", show=False),
        Binding("o", "overrides", "Show/hide overrides column", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._warnings: list[str] = []
        self._counts: dict[str, int] = {}
        self._workers_alive = 0
        self._last_status: dict[int, str] = {}  # UI thread: for finish/fail notices
        self._dropped: set[int] = set()  # jobs whose metric drop was already announced
        self._cache = RunsCache()  # touched only by the (single) read thread

    def compose(self) -> ComposeResult:
        from ctxsim.names import DATASETS, LOSSES

        yield Header()
        yield FilterBar(DATASETS, LOSSES)
        yield RunsTable(id="runs")
        yield StatusLine()
        yield KeyBar()

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.table.sort_by("id", reverse=True)
        self.poll()

    # --- reading (thread) ---------------------------------------------------------------------
    def load(self) -> None:
        """One incremental read (ctxsim.tui.data.RunsCache); the rows go to the UI as a message."""
        reload_paper, self.dash.baselines_changed = self.dash.baselines_changed, False
        up = self._cache.refresh(self.dash.read_reg, self.dash.clock(), self.dash.stale_after_s, reload_paper,
                                 full_reload_every=FULL_RELOAD_EVERY)
        self._counts, self._workers_alive = up.counts, up.workers_alive
        self.post_message(RunsLoaded(up.rows, 0.0, up.warnings, up.changed, up.drops))

    # --- UI -----------------------------------------------------------------------------------
    def on_runs_loaded(self, msg: RunsLoaded) -> None:
        self.table.set_rows(msg.rows, msg.changed)
        self._warnings = msg.notes
        self.set_warnings(self._warnings)
        self._announce(msg.rows, msg.drops)

    def _announce(self, rows, drops: dict) -> None:
        """Bell + notice when a job finishes or fails; a notice when a running job's R@1 drops."""
        first = not self._last_status
        news = []
        for r in rows:
            before = self._last_status.get(r.id)
            self._last_status[r.id] = r.status
            if not first and before == JobStatus.RUNNING and r.status in (JobStatus.DONE, JobStatus.FAILED):
                news.append((f"job {r.id} {r.status}", r.status == JobStatus.DONE))
        for jid, drop in sorted(drops.items()):
            if jid not in self._dropped:
                self._dropped.add(jid)
                news.append((f"job {jid}: R@1 fell from {drop[0]:.1f} to {drop[1]:.1f}", False))
        for text, ok in news:
            if text.endswith((JobStatus.DONE, JobStatus.FAILED)):
                self.dash.bell_and_notice(text, ok)
            else:
                self.status.set_notice(f"⚠ {text}")

    def info_text(self, elapsed_ms=None) -> str:
        c = self._counts
        total = sum(c.values())
        shown = self.table.shown_count
        parts = [f"{shown} of {total} runs shown" if shown != total else f"{total} runs"]
        parts += [f"{c[s]} {s}" for s in (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.DONE, JobStatus.CANCELLED) if c.get(s)]
        parts.append(f"{self._workers_alive} worker{'s' if self._workers_alive != 1 else ''} alive")
        parts.append(self.dash.label)
        if self.dash.show_timings and elapsed_ms is not None:
            parts.append(f"read {elapsed_ms:.0f} ms")
        return " · ".join(parts)

    def after_load(self, msg: RegistryStatus) -> None:
        self._last_ms = msg.elapsed_ms
        self.status.set_info(self.info_text(msg.elapsed_ms))

    def on_filter_bar_changed(self, msg: FilterBar.Changed) -> None:
        self.table.set_filter(msg.filter)
        if isinstance(self.app.focused, Select):  # a choice made: j/k move rows again (typing a search keeps focus)
            self.table.focus()
        self.status.set_info(self.info_text(getattr(self, "_last_ms", None)))

    def on_runs_table_opened(self, msg: RunsTable.Opened) -> None:
        self.dash.open_detail(msg.job_id)

    def action_open(self) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.open_detail(jid)

    def action_log(self) -> None:
        jid = self.table.current_id()
        if jid is not None:
            self.dash.open_detail(jid, tab="log")

    def action_mark(self) -> None:
        jid = self.table.toggle_mark()
        if jid is not None:
            self.status.set_notice(f"{len(self.table.marked)} marked (c compare, d diff)")

    def action_compare(self) -> None:
        ids = sorted(self.table.marked) or ([self.table.current_id()] if self.table.current_id() else [])
        if ids:
            self.dash.open_compare(ids)

    def action_diff(self) -> None:
        ids = sorted(self.table.marked)
        if len(ids) != 2:
            self.status.set_notice("mark exactly two runs (space) to diff their configs")
            return
        self.dash.open_diff(ids[0], ids[1])

    def _job(self):
        jid = self.table.current_id()
        return self._cache.jobs.get(jid) if jid is not None else None

    def action_copy(self) -> None:
        job = self._job()
        if job is not None:
            self.dash.copy_run_command(job)

    def action_clone(self) -> None:
        job = self._job()
        if job is not None:
            self.dash.clone_into_form(job)

    def action_cancel(self) -> None:
        row = self.table.current_row()
        if row is not None:
            self.dash.confirm_cancel(row.id, row.status)

    def action_retry(self) -> None:
        row = self.table.current_row()
        if row is not None:
            self.dash.retry(row.id, row.status)

    def action_priority(self, delta: int) -> None:
        row = self.table.current_row()
        if row is not None:
            self.dash.reprioritise(row.id, delta, row.status)

    def action_sort_next(self) -> None:
        keys = self.table.shown_columns
        cur = self.table.sort_key
        nxt = keys[(keys.index(cur) + 1) % len(keys)] if cur in keys else keys[0]
        self.table.sort_by(nxt)
        self.status.set_notice(f"sorted by {dict(RUN_COLUMNS)[nxt]}")

    def action_sort_reverse(self) -> None:
        self.table.sort_by(self.table.sort_key, reverse=not self.table.sort_reverse)

    def action_overrides(self) -> None:
        shown = self.table.toggle_column("overrides")
        self.status.set_notice("overrides column shown" if shown else "overrides column hidden")

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_filter(self) -> None:
        self.query_one("#f-status", Select).focus()

    def action_clear_filter(self) -> None:
        self.query_one(FilterBar).set_values(status="", dataset="", loss="", text="")
        self.table.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.table.focus()
