"""One run: live loss and retrieval curves (with the paper's curve), config, log tail, checkpoints."""

from __future__ import annotations

from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, TabbedContent, TabPane

from ctxsim.registry import queries
from ctxsim.tui.data import LogFollower, SeriesCache, checkpoint_files
from ctxsim.tui.format import is_stale, paper_key, series_groups
from ctxsim.tui.messages import DetailLoaded, LogLines, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.checkpoint_list import CheckpointList, EventList
from ctxsim.tui.widgets.config_view import ConfigView
from ctxsim.tui.widgets.curve_plot import CurvePlot
from ctxsim.tui.widgets.log_tail import LogTail
from ctxsim.tui.widgets.run_header import RunHeader
from ctxsim.tui.widgets.status_line import StatusLine

TABS = ("curves", "config", "log", "files")


class DetailScreen(DashScreen):
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("1", "tab('curves')", "Curves"),
        Binding("2", "tab('config')", "Config"),
        Binding("3", "tab('log')", "Log"),
        Binding("4", "tab('files')", "Files"),
        Binding("x", "cancel", "Cancel job"),
        Binding("r", "retry", "Retry"),
    ]

    def __init__(self, job_id: int, **kw) -> None:
        super().__init__(**kw)
        self.job_id = job_id
        self.cache = SeriesCache(job_id)
        self.follower: Optional[LogFollower] = None
        self._paper: Optional[dict] = None
        self._paper_curve: list = []
        self._paper_loaded = False
        self.detail: Optional[dict] = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunHeader(id="run-header")
        with TabbedContent(initial="curves"):
            with TabPane("Curves [1]", id="curves"):
                with Horizontal():
                    yield CurvePlot("loss (total and terms) vs step", xlabel="step", id="loss-plot")
                    yield CurvePlot("retrieval % vs epoch", xlabel="epoch", id="eval-plot")
            with TabPane("Config [2]", id="config"):
                yield ConfigView(id="config-view")
            with TabPane("Log [3]", id="log"):
                yield LogTail(id="log-tail")
            with TabPane("Checkpoints & events [4]", id="files"):
                with Vertical():
                    yield CheckpointList(id="checkpoints")
                    yield EventList(id="events")
        yield StatusLine()
        yield Footer()

    def on_mount(self) -> None:
        self.poll()

    # --- reading (thread) ---------------------------------------------------------------------
    def load(self) -> None:
        reg = self.dash.read_reg
        d = queries.job_detail(reg, self.job_id)
        if d is None:
            self.post_message(DetailLoaded(self.job_id, None, 0, None, [], [], []))
            return
        if not self._paper_loaded:
            self._paper = queries.paper_numbers(reg).get(paper_key(d))
            self._paper_curve = queries.paper_curve(reg, d["dataset"], d["loss"], d.get("resolution"))
            self._paper_loaded = True
        n = self.cache.update(reg, d["summaries"])
        events = queries.job_events(reg, self.job_id, limit=200)
        files = checkpoint_files(d.get("run_dir"))
        snapshot = {k: list(v) for k, v in self.cache.points.items()}  # the UI never sees a growing list
        self.post_message(DetailLoaded(self.job_id, d, n, self._paper, self._paper_curve, events, files, snapshot))
        if self.follower is None:
            from pathlib import Path

            self.follower = LogFollower(Path(d["run_dir"]) / "stdout.log" if d.get("run_dir") else None)
        lines, reset = self.follower.read()
        if lines or reset:
            self.post_message(LogLines(self.job_id, lines, reset))

    # --- UI -----------------------------------------------------------------------------------
    def on_detail_loaded(self, msg: DetailLoaded) -> None:
        self.detail = msg.detail
        now = self.dash.clock()
        points = msg.points
        total = sum(len(v) for v in points.values())
        stale = msg.detail is not None and is_stale(msg.detail, now, self.dash.stale_after_s)
        self.query_one(RunHeader).show(msg.detail, msg.paper, now, total, stale)
        if msg.detail is None:
            return
        loss_keys, eval_keys = series_groups(points)
        self.query_one("#loss-plot", CurvePlot).set_series(
            {k.removeprefix("train/"): points[k] for k in loss_keys if k != "epoch/loss"})
        evals = {k: [(s, 100.0 * v) for s, v in points[k]] for k in eval_keys}
        ref = {"paper R@1": msg.paper_curve} if msg.paper_curve else {}
        self.query_one("#eval-plot", CurvePlot).set_series(evals, ref)
        self.query_one(ConfigView).show(msg.detail.get("config_json"))
        self.query_one(CheckpointList).show(msg.checkpoints)
        self.query_one(EventList).show(msg.events)
        log = self.query_one(LogTail)
        if not log.lines and not msg.detail.get("run_dir"):
            log.feed(["(this job has no run folder yet)"], reset=True)
        elif self.follower is not None and self.follower.path is not None and not self.follower.path.exists() \
                and not log.lines:
            log.feed([f"(waiting for {self.follower.path.name} in the run folder)"], reset=True)

    def on_log_lines(self, msg: LogLines) -> None:
        log = self.query_one(LogTail)
        if log.lines and log.lines[0].startswith("(") and not msg.reset:
            log.clear()
        log.feed(msg.lines, msg.reset)

    def after_load(self, msg: RegistryStatus) -> None:
        if self.detail is None:
            self.status.set_info(f"job {self.job_id} · not found")
            return
        parts = [self.dash.label, f"job {self.job_id}", f"{sum(len(v) for v in self.cache.points.values())} points"]
        if self.dash.show_timings and msg.elapsed_ms is not None:
            parts.append(f"read {msg.elapsed_ms:.0f} ms")
        self.status.set_info(" · ".join(parts))

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_cancel(self) -> None:
        self.dash.confirm_cancel(self.job_id)

    def action_retry(self) -> None:
        self.dash.retry(self.job_id)
