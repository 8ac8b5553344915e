"""The Textual app behind ``ctxsim tui``: screens over registry queries, polled in thread workers.

    CtxsimApp(registry).run()                    # or: ctxsim tui [--db URL] [--serve --port N]

Every read runs in a thread worker and posts a typed message back (tui/messages.py); a locked or
unreachable database turns into a status line while the last data stays on screen. The clock is
injected (``clock=``) so snapshots are reproducible.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Optional

from textual.app import App

from ctxsim.registry.db import Registry, open_registry, redact
from ctxsim.tui.bindings import APP_BINDINGS
from ctxsim.tui.data import read_registry
from ctxsim.tui.format import DEFAULT_STALE_AFTER_S
from ctxsim.tui.messages import ActionDone


def utc_now() -> datetime:
    """Naive UTC, like the registry's timestamps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class CtxsimApp(App):
    """The dashboard. ``poll_interval=None`` disables the timer (tests drive ``refresh_now``)."""

    CSS_PATH = "app.tcss"
    TITLE = "ctxsim"
    BINDINGS = APP_BINDINGS

    def __init__(
        self,
        registry: Optional[Registry] = None,
        db: Optional[str] = None,
        clock: Callable[[], datetime] = utc_now,
        poll_interval: Optional[float] = 2.0,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        label: Optional[str] = None,
        show_timings: bool = True,
        load_baselines: bool = True,
    ) -> None:
        super().__init__()
        self.reg = registry if registry is not None else open_registry(db)
        self.read_reg = read_registry(self.reg)
        self.clock = clock
        self.poll_interval = poll_interval
        self.stale_after_s = stale_after_s
        self.label = label or redact(self.reg.url).removeprefix("sqlite:///")
        self.show_timings = show_timings
        self.load_baselines = load_baselines
        self.baselines_changed = False
        self.last_read_ms: Optional[float] = None
        self.sub_title = self.label

    def on_mount(self) -> None:
        from ctxsim.tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        if self.load_baselines:
            self.run_worker(self._ensure_baselines, thread=True, exit_on_error=False)
        if self.poll_interval:
            self.set_interval(self.poll_interval, self.action_refresh_now)

    def _ensure_baselines(self) -> None:
        """Loads the shipped paper numbers into the registry on first use (a write, so in a thread)."""
        from ctxsim.baselines import ensure_baselines

        try:
            if ensure_baselines(self.reg):
                self.baselines_changed = True
        except Exception as e:  # noqa: BLE001 - a read-only registry still shows its runs
            self.post_message(ActionDone(f"paper numbers not loaded: {str(e).splitlines()[0]}", ok=False))

    # --- navigation ---------------------------------------------------------------------------
    def action_refresh_now(self) -> None:
        poll = getattr(self.screen, "poll", None)
        if poll is not None:
            poll()

    def open_detail(self, job_id: int) -> None:
        from ctxsim.tui.screens.detail import DetailScreen

        self.push_screen(DetailScreen(job_id))

    def open_compare(self, job_ids: list[int]) -> None:
        from ctxsim.tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(job_ids))

    def action_queue(self) -> None:
        from ctxsim.tui.screens.queue import QueueScreen

        if not isinstance(self.screen, QueueScreen):
            self.push_screen(QueueScreen())

    def action_new_run(self) -> None:
        from ctxsim.tui.screens.new_run import NewRunScreen

        def done(job_id: Optional[int]) -> None:
            if job_id is not None:
                self._notice(f"queued job {job_id}", ok=True)
                self.action_refresh_now()

        self.push_screen(NewRunScreen(), done)

    # --- writes (thread workers) --------------------------------------------------------------
    def _write(self, fn, *args) -> None:  # noqa: ANN001
        def run() -> None:
            try:
                text = fn(self.reg, *args)
                self.post_message(ActionDone(text, ok=True))
            except Exception as e:  # noqa: BLE001 - CtxsimError or a database error: one line
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.post_message(ActionDone(first, ok=False))

        self.run_worker(run, thread=True, group="write", exit_on_error=False)

    def confirm_cancel(self, job_id: int) -> None:
        from ctxsim.tui.actions import cancel_job
        from ctxsim.tui.screens.confirm import ConfirmScreen

        def answer(yes: Optional[bool]) -> None:
            if yes:
                self._write(cancel_job, job_id)

        self.push_screen(ConfirmScreen(f"Cancel job {job_id}?"), answer)

    def retry(self, job_id: int) -> None:
        from ctxsim.tui.actions import retry_job

        self._write(retry_job, job_id)

    def reprioritise(self, job_id: int, delta: int) -> None:
        from ctxsim.tui.actions import change_priority

        self._write(change_priority, job_id, delta)

    def on_action_done(self, msg: ActionDone) -> None:
        self._notice(msg.text, msg.ok)
        self.action_refresh_now()

    def _notice(self, text: str, ok: bool) -> None:
        from ctxsim.tui.widgets.status_line import StatusLine

        for line in self.screen.query(StatusLine):
            line.set_notice(text if ok else f"error: {text}")
