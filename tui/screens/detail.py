"""One run: live loss and retrieval curves (with the paper's curve), config, log tail, checkpoints."""

from __future__ import annotations

import json
import threading
from typing import Callable, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Header, Static, TabbedContent, TabPane, Tabs

from ctxsim.registry import history, queries
from ctxsim.registry.states import JobStatus
from ctxsim.runner.logs import LogFollower
from ctxsim.tui.data import SeriesCache, checkpoint_files
from ctxsim.tui.format import fmt_duration, is_stale, overrides_of, paper_key, series_groups
from ctxsim.tui.messages import DetailLoaded, LogLines, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.checkpoint_list import CheckpointList, EventList
from ctxsim.tui.widgets.config_view import ConfigView
from ctxsim.tui.widgets.curve_plot import CurvePlot
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.log_tail import LogTail
from ctxsim.tui.widgets.run_header import RunHeader
from ctxsim.tui.widgets.status_line import StatusLine

TABS = ("curves", "config", "log", "files")


EVENTS_PAGE = 200  # events shown at first and added by each page back
EVENTS_FOLLOW_MAX = 10_000  # events read per poll while following (all new ones in practice)
PREFETCH_WAIT_S = 0.3  # the screen is shown after this even when its first read is not done


class DetailScreen(DashScreen):
    VIEW_NAME = "Run detail"
    HELP = ("One run: loss (log scale when it spans decades) and retrieval curves with the paper's "
            "number and curve, its config, its log (followed live), checkpoints, events and every "
            "attempt's outcome. The tab keys work wherever the focus is.")
    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back"),
        Binding("1", "tab('curves')", "Curves", priority=True),
        Binding("2", "tab('config')", "Config", priority=True),
        Binding("3", "tab('log')", "Log", priority=True),
        Binding("4", "tab('files')", "Files", priority=True),
        Binding("a", "all_series", "Loss terms and R@K on/off", show=False),
        Binding("L", "log_scale", "Loss axis log/linear", show=False),
        Binding("W", "wrap_log", "Log lines wrapped/whole", show=False),
        Binding("b", "older_events", "Older events", show=False),
        Binding("y", "copy", "Copy run command", show=False),
        Binding("e", "clone", "Clone into new-run form", show=False),
        Binding("x", "cancel", "Cancel job", show=False),
        Binding("r", "retry", "Retry", show=False),
    ]

    def __init__(self, job_id: int, tab: Optional[str] = None, **kw) -> None:
        super().__init__(**kw)
        self.job_id = job_id
        self.initial_tab = tab if tab in TABS else "curves"
        self.events: dict[int, dict] = {}  # read thread: every event held, by id
        self._older_wanted = False
        self.attempts: list[dict] = []
        self.cache = SeriesCache(job_id)
        self.all_series = False  # `a`: the loss terms and R@2..R@K too
        self._points: dict = {}
        self._paper_msg: tuple = (None, [])
        self.follower: Optional[LogFollower] = None
        self._untrained_key: Optional[str] = None  # "" when the run has none (no fingerprint)
        self._untrained_value: Optional[dict] = None
        self._paper: Optional[dict] = None
        self._paper_curve: list = []
        self._paper_loaded = False
        self.detail: Optional[dict] = None
        self._skipped: Optional[int] = None  # unreadable images the finished run skipped (done event)
        # messages of a read that ran before the screen was mounted (prefetch), posted on mount
        self._held: Optional[list[Message]] = None
        self._held_lock = threading.Lock()
        self._dash = None

    @property
    def dash(self):
        return self._dash if self._dash is not None else self.app

    def prefetch_then(self, show: Callable[[], None], wait_s: Optional[float] = None) -> None:
        """Reads the run before the screen is shown, then calls ``show`` (which pushes it): when the
        read is done, or after ``wait_s`` if it is slow. The read runs in a thread as every read
        does; done first, it is not starved of the GIL by the new screen's layout and paint (each of
        its SQLite calls would wait for the busy UI thread), and the screen's first frame has data."""
        app = self._dash = self.app  # in the read thread an unmounted screen cannot find its app
        self._held = []
        self._in_flight = True
        shown = False

        def show_once() -> None:
            nonlocal shown
            if not shown:
                shown = True
                show()

        timer = app.set_timer(PREFETCH_WAIT_S if wait_s is None else wait_s, show_once)

        def read() -> None:
            self._guarded(self.load)()
            app.call_from_thread(done)

        def done() -> None:
            timer.stop()
            if not shown:  # shown after its read: the first resume need not read again
                self.skip_resume_poll = True
            show_once()

        app.run_worker(read, thread=True, group="detail-prefetch", exit_on_error=False)

    def post_message(self, message: Message) -> bool:
        with self._held_lock:  # the read thread posts while the UI thread may be mounting
            if self._held is not None and isinstance(message, (DetailLoaded, LogLines, RegistryStatus)):
                self._held.append(message)
                return True
        return super().post_message(message)

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunHeader(id="run-header")
        with TabbedContent(initial=self.initial_tab):
            with TabPane("Curves [1]", id="curves"):
                with Horizontal():  # one metric per chart; `a` adds the loss terms and R@2..R@K
                    yield CurvePlot("loss", xlabel="step", log_y=None, id="loss-plot")
                    with Vertical():
                        yield CurvePlot("R@1 %", xlabel="epoch", percent=True, id="r1-plot")
                        yield CurvePlot("MAP@R %", xlabel="epoch", percent=True, id="map-plot")
            with TabPane("Config [2]", id="config"):
                yield ConfigView(id="config-view")
            with TabPane("Log [3]", id="log"):
                yield LogTail(id="log-tail")
            with TabPane("Checkpoints & events [4]", id="files"):
                with Vertical():
                    yield Static("", id="attempts")
                    yield CheckpointList(id="checkpoints")
                    yield EventList(id="events")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        with self._held_lock:
            held, self._held = self._held, None
        if held is None:
            self.poll()
            return
        handlers = {DetailLoaded: self.on_detail_loaded, LogLines: self.on_log_lines,
                    RegistryStatus: self.on_registry_status}
        for m in held:  # a prefetched read, applied before the first frame (no second read now)
            handlers[type(m)](m)

    # --- reading (thread) ---------------------------------------------------------------------
    def load(self) -> None:
        reg = self.dash.read_reg
        d = queries.job_detail(reg, self.job_id)
        if d is None:
            self.post_message(DetailLoaded(self.job_id, None, 0, None, [], [], []))
            return
        if not self._paper_loaded:
            self._paper = self.dash.reference.numbers(reg).get(paper_key(d))
            self._paper_curve = self.dash.reference.curve(reg, d["dataset"], d["loss"], d.get("resolution"))
            self._paper_loaded = True
        n = self.cache.update(reg, d["summaries"])
        self.attempts = history.job_attempts(reg, [self.job_id]).get(self.job_id, [])
        d["prior_elapsed_s"] = history.prior_elapsed_s(self.attempts, d.get("started_at"))
        d["skipped_images"] = self._skipped_images(reg, d["status"])
        d["untrained"] = self._untrained(reg, d)
        events = self._read_events(reg)
        files = checkpoint_files(d.get("run_dir"))
        snapshot = {k: list(v) for k, v in self.cache.points.items()}  # the UI never sees a growing list
        self.post_message(DetailLoaded(self.job_id, d, n, self._paper, self._paper_curve, events, files, snapshot))
        if self.follower is None:
            from pathlib import Path

            self.follower = LogFollower(Path(d["run_dir"]) / "stdout.log" if d.get("run_dir") else None)
        lines, reset = self.follower.read()
        if lines or reset:
            self.post_message(LogLines(self.job_id, lines, reset))

    def _skipped_images(self, reg, status: str) -> int:
        """The done event's ``skipped_images`` (--skip-bad-images), read once the job is done."""
        if status != JobStatus.DONE:
            self._skipped = None
            return 0
        if self._skipped is None:
            from ctxsim.registry.models import EventKind

            payloads = queries.job_event_payloads(reg, [self.job_id], EventKind.DONE).get(self.job_id) or []
            last = payloads[-1] if payloads else None
            self._skipped = int((last or {}).get("skipped_images") or 0)
        return self._skipped

    def _untrained(self, reg, d: dict) -> Optional[dict]:
        """The untrained baseline of a finished run ({metric: percent}), looked up each poll until
        it exists (``ctxsim eval --untrained`` or ``ctxsim compare`` records it); None until then."""
        if d["status"] != JobStatus.DONE:
            return None
        from ctxsim.baselines.untrained import find_untrained, untrained_key

        if self._untrained_value is None:
            if self._untrained_key is None:
                from ctxsim.registry.models import EventKind
                from ctxsim.report.comparability import run_fingerprint

                starts = queries.job_event_payloads(reg, [self.job_id], EventKind.START).get(self.job_id) or []
                self._untrained_key = untrained_key(d.get("config_json"), run_fingerprint(starts, d.get("run_dir"))) or ""
            if self._untrained_key:
                self._untrained_value = find_untrained(reg, [self._untrained_key]).get(self._untrained_key)
        return self._untrained_value

    def _read_events(self, reg) -> list[dict]:
        """Newest first: the newest page at first, then every newer event each poll (no gaps), and
        one more page of older ones when asked (``b``)."""
        if not self.events:
            page = history.job_events_page(reg, self.job_id, EVENTS_PAGE)
        else:
            page = history.job_events_page(reg, self.job_id, EVENTS_FOLLOW_MAX, after_id=max(self.events))
        if self._older_wanted and self.events:
            self._older_wanted = False
            page += history.job_events_page(reg, self.job_id, EVENTS_PAGE, before_id=min(self.events))
        for e in page:
            self.events[e["id"]] = e
        return [self.events[i] for i in sorted(self.events, reverse=True)]

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
        self._points, self._paper_msg = points, (msg.paper, msg.paper_curve)
        self._draw_curves()
        self.query_one(ConfigView).show(msg.detail.get("config_json"))
        self.query_one(CheckpointList).show(msg.checkpoints)
        self.query_one(EventList).show(msg.events)
        self.query_one("#attempts", Static).update(attempts_text(self.attempts))
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
        """Switches tab wherever the focus is: focus inside the pane being hidden would move to a
        sibling there and TabbedContent would switch back to it, so the tab bar takes it first."""
        tc = self.query_one(TabbedContent)
        tabs = tc.query_one(Tabs)
        if self.focused is not None and self.focused is not tabs and tc in self.focused.ancestors:
            tabs.focus()
        tc.active = tab

    def action_cancel(self) -> None:
        self.dash.confirm_cancel(self.job_id, self.detail["status"] if self.detail else None)

    def action_retry(self) -> None:
        self.dash.retry(self.job_id, self.detail["status"] if self.detail else None)

    def _draw_curves(self) -> None:
        """Total loss; R@1 with the paper's curve and number; MAP@R. With ``all_series`` the loss
        terms join the loss chart and R@2..R@K the R@1 chart."""
        points = self._points
        loss_keys, eval_keys = series_groups(points)
        loss_keys = [k for k in loss_keys if k != "epoch/loss" and (self.all_series or k == "train/loss")]
        self.query_one("#loss-plot", CurvePlot).set_series({k.removeprefix("train/"): points[k] for k in loss_keys})
        pct_of = {k: [(s, 100.0 * v) for s, v in points[k]] for k in eval_keys}
        paper, paper_curve = self._paper_msg
        ref = {"paper R@1": paper_curve} if paper_curve else {}
        lines = {"paper": paper["value"]} if paper and paper.get("value") is not None else {}
        recall = {k: v for k, v in pct_of.items() if k == "R@1" or (self.all_series and k.startswith("R@"))}
        self.query_one("#r1-plot", CurvePlot).set_series(recall, ref, lines)
        self.query_one("#map-plot", CurvePlot).set_series({k: v for k, v in pct_of.items() if k == "MAP@R"})

    def action_all_series(self) -> None:
        self.all_series = not self.all_series
        self._draw_curves()
        self.status.set_notice("loss terms and R@2..R@K shown" if self.all_series else "total loss, R@1 and MAP@R only")

    def action_wrap_log(self) -> None:
        """W: the log's long lines folded to the width (their whole text on screen) or scrolled."""
        log = self.query_one(LogTail)
        log.set_wrap(not log.wrapped)
        self.action_tab("log")
        self.status.set_notice("log lines wrapped" if log.wrapped else "log lines whole (← → scroll)")

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", CurvePlot)
        plot.set_log_y(not plot.log_y)
        self.status.set_notice(f"loss axis {'log' if plot.log_y else 'linear'}")

    def action_older_events(self) -> None:
        self._older_wanted = True
        self.action_tab("files")
        self.poll()

    def action_copy(self) -> None:
        if self.detail:
            self.dash.copy_run_command(self._job_for_commands())

    def action_clone(self) -> None:
        if self.detail:
            self.dash.clone_into_form(self._job_for_commands())

    def _job_for_commands(self) -> dict:
        """The job with its overrides of the recipe (for ``y`` and ``e``)."""
        job = dict(self.detail or {})
        try:
            from ctxsim.train.recipes import recipe

            base = recipe(job["dataset"], job["loss"], job.get("resolution") or 256).to_dict()
            job["overrides"] = overrides_of(json.loads(job.get("config_json") or "{}"), base)
        except Exception:  # noqa: BLE001 - no recipe for this job: the command without overrides
            job["overrides"] = []
        return job


def attempts_text(attempts: list[dict]) -> str:
    """One line per attempt: how long it ran and how it ended (every failure reason kept)."""
    if not attempts:
        return "no attempt yet"
    lines = []
    n = 0
    for a in attempts:
        took = fmt_duration((a["end"] - a["start"]).total_seconds()) if a["start"] and a["end"] else ""
        what = a["outcome"] or JobStatus.RUNNING
        if a["start"]:
            n += 1
        label = f"attempt {n}" if a["start"] else ("while queued" if n == 0 else f"after attempt {n}")
        msg = (a["message"] or "").splitlines()[0] if a["message"] else ""
        lines.append(f"{label}: {what}" + (f" after {took}" if took else "") + (f" · {msg}" if msg else ""))
    return "\n".join(lines)
