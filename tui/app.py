"""The Textual app behind ``ctxsim tui``: screens over registry queries, polled in thread workers.

    CtxsimApp(registry).run()                    # or: ctxsim tui [--db URL] [--serve --port N]

Every read runs in a thread worker and posts a typed message back (tui/messages.py); a locked or
unreachable database turns into a status line while the last data stays on screen. The clock is
injected (``clock=``) so snapshots are reproducible.

A registry the dashboard cannot write (a file without write permission, a read-only folder) is opened
read-only: everything shows, the status line says "read-only registry", the write actions (new run,
clone, cancel, retry, priority) are refused with a one-line notice, and no paper numbers are loaded.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from functools import partial
from typing import Callable, Iterable, Optional

from textual.app import App, SystemCommand
from textual.screen import Screen

from ctxsim.errors import one_line
from ctxsim.registry.db import Registry, open_registry, read_registry, redact
from ctxsim.registry.states import JobStatus
from ctxsim.tui.bindings import APP_BINDINGS
from ctxsim.tui.data import ReferenceCache
from ctxsim.tui.format import DEFAULT_STALE_AFTER_S
from ctxsim.tui.messages import ActionDone


def bell_default() -> bool:
    """The bell on a finished or failed job is on unless ``CTXSIM_TUI_BELL=0``."""
    return os.environ.get("CTXSIM_TUI_BELL", "1").strip().lower() not in ("0", "no", "off", "false")


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
        bell: Optional[bool] = None,
        gpu_probe: Optional[Callable[[], Optional[list]]] = None,
    ) -> None:
        super().__init__()
        if registry is None:
            from ctxsim.registry.db import registry_is_readonly

            # an existing registry only: a missing file (a typo in --db) is NoRegistryError, never a new one
            registry = open_registry(db, create=False, readonly=registry_is_readonly(db))
        self.reg = registry
        self.readonly = bool(getattr(self.reg, "readonly", False))  # writes refused, see refuse_write
        self.ring_bell = bell_default() if bell is None else bell
        if gpu_probe is None:
            from ctxsim.tui.screens.queue import local_gpus

            gpu_probe = local_gpus
        self.gpu_probe = gpu_probe  # this machine's GPUs (NVML), read in the queue view's thread
        self._write_engine = None  # the writes' own engine (tui/writes.py), made on first use
        self._waiting_write: Optional[threading.Event] = None  # a write waiting for the lock
        self.read_reg = read_registry(self.reg)
        self.clock = clock
        self.poll_interval = poll_interval
        self.stale_after_s = stale_after_s
        self.label = label or redact(self.reg.url).removeprefix("sqlite:///")
        self.show_timings = show_timings
        self.load_baselines = load_baselines
        self.baselines_changed = False
        self.reference = ReferenceCache()  # the paper's numbers and curves, read once for every screen
        self.last_read_ms: Optional[float] = None
        self._detail_opening = False  # a detail's first read runs before its screen is shown
        self.sub_title = self.label

    def on_mount(self) -> None:
        from ctxsim.tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        if self.load_baselines and not self.readonly:
            self.run_worker(self._ensure_baselines, thread=True, exit_on_error=False)
        if self.poll_interval:
            self.set_interval(self.poll_interval, self.action_refresh_now)

    def _ensure_baselines(self) -> None:
        """Loads the shipped paper numbers into the registry on first use (a write, so in a thread)."""
        from ctxsim.baselines import ensure_baselines

        try:
            if ensure_baselines(self.reg):
                self.reference.invalidate()
                self.baselines_changed = True
        except Exception as e:  # noqa: BLE001 - a read-only registry still shows its runs
            self.post_message(ActionDone(f"paper numbers not loaded: {one_line(e)}", ok=False))

    # --- navigation ---------------------------------------------------------------------------
    def action_back(self) -> None:
        """q: back one level; quits only from the runs table (the bottom screen)."""
        if len(self.screen_stack) > 2:
            self.pop_screen()
        else:
            self.exit()

    def action_help(self) -> None:
        from ctxsim.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette lists every action of the current view and of the app, by its description."""
        from ctxsim.tui.bindings import APP_BINDINGS

        seen = set()
        for node, bindings in ((screen, getattr(screen, "BINDINGS", [])), (self, APP_BINDINGS)):
            for b in bindings:
                desc = getattr(b, "description", "")
                if not desc or b.action in seen:
                    continue
                seen.add(b.action)
                keys = ", ".join(self.get_key_display(type(b)(k.strip(), b.action, key_display=b.key_display))
                                 for k in b.key.split(","))
                yield SystemCommand(desc, f"key {keys}", partial(self.run_action, b.action, node))
        yield from super().get_system_commands(screen)

    def bell_and_notice(self, text: str, ok: bool = True) -> None:
        """A job finished or failed: a status-line notice, and the terminal bell unless turned off."""
        self._notice(text, ok)
        if self.ring_bell:
            self.bell()

    def action_refresh_now(self) -> None:
        poll = getattr(self.screen, "poll", None)
        if poll is not None:
            poll()

    def open_detail(self, job_id: int, tab: Optional[str] = None) -> None:
        from ctxsim.tui.screens.detail import DetailScreen

        if self._detail_opening:  # Enter pressed again while the first one's read runs
            return
        screen = DetailScreen(job_id, tab=tab)
        self._detail_opening = True

        def show() -> None:
            self._detail_opening = False
            self.push_screen(screen)

        screen.prefetch_then(show)

    def open_diff(self, a: int, b: int) -> None:
        from ctxsim.tui.screens.diff import DiffScreen

        self.push_screen(DiffScreen(a, b))

    def copy_run_command(self, job: dict) -> None:
        """y: the exact ``ctxsim run …`` command of a job to the clipboard (OSC 52: works over SSH and in tmux)."""
        from ctxsim.tui.format import run_command

        cmd = run_command(job)
        self.copy_to_clipboard(cmd)
        self._notice(f"copied: {cmd}", ok=True)

    def clone_into_form(self, job: dict) -> None:
        """e: the new-run form filled with a job's dataset, loss, resolution, overrides and seed; the
        queued clone keeps the job's tags."""
        overrides = list(job.get("overrides") or [])
        if job.get("seed") is not None and not any(o.startswith("seed=") for o in overrides):
            overrides.append(f"seed={job['seed']}")
        self.action_new_run(prefill={
            "dataset": job["dataset"], "loss": job["loss"], "resolution": job.get("resolution"),
            "name": (job.get("name") or "") and f"{job['name']}-clone", "overrides": " ".join(overrides),
            "tags": list(job.get("tags") or []),
        })

    def open_compare(self, job_ids: list[int]) -> None:
        from ctxsim.tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(job_ids))

    def open_paper_table(self, resolution: int = 224) -> None:
        from ctxsim.tui.screens.paper_table import PaperTableScreen

        if not isinstance(self.screen, PaperTableScreen):
            self.push_screen(PaperTableScreen(resolution))

    def action_queue(self) -> None:
        from ctxsim.tui.screens.queue import QueueScreen

        if not isinstance(self.screen, QueueScreen):
            self.push_screen(QueueScreen())

    def action_studies(self) -> None:
        from ctxsim.tui.screens.studies import StudiesScreen

        if not isinstance(self.screen, StudiesScreen):
            self.push_screen(StudiesScreen())

    def action_new_run(self, prefill: Optional[dict] = None) -> None:
        from ctxsim.tui.screens.new_run import NewRunScreen

        if self.refuse_write("queue a new run"):
            return

        def done(result) -> None:  # - job id, ("open", id) or None
            if isinstance(result, tuple) and result[0] == "open":
                self.open_detail(result[1])
            elif result is not None:
                self._notice(f"queued job {result}", ok=True)
                self.action_refresh_now()

        self.push_screen(NewRunScreen(prefill), done)

    # --- writes (thread workers) --------------------------------------------------------------
    def refuse_write(self, what: str) -> bool:
        """On a read-only registry: a one-line notice that ``what`` cannot be done, and True."""
        if not self.readonly:
            return False
        from ctxsim.tui.writes import READONLY_NOTICE

        self._notice(f"{READONLY_NOTICE}: cannot {what} (the file or its folder is not writable)", ok=True)
        return True

    def _write(self, fn, *args) -> None:
        """Runs ``fn(registry, *args)`` in a thread; after WAIT_NOTICE_AFTER_S still waiting for the
        registry lock, the status line says so and Esc cancels it."""
        from ctxsim.tui.writes import WAIT_NOTICE_AFTER_S, CancellableWrites, WriteCancelled, ui_write_engine

        if self.refuse_write("change the registry"):
            return
        if self._write_engine is None:
            self._write_engine = ui_write_engine(self.reg)
        cancel, done = threading.Event(), threading.Event()
        reg = CancellableWrites(self.reg, self._write_engine, cancel)
        self._waiting_write = None

        def run() -> None:
            try:
                text = fn(reg, *args)
                self.post_message(ActionDone(text, ok=True))
            except WriteCancelled as e:
                self.post_message(ActionDone(one_line(e), ok=True))
            except Exception as e:  # noqa: BLE001 - CtxsimError or a database error: one line
                self.post_message(ActionDone(one_line(e), ok=False))
            finally:
                done.set()

        def still_waiting() -> None:
            if not done.is_set():
                self._waiting_write = cancel
                self.refresh_bindings()
                self._notice("waiting for the registry lock… (Esc cancels)", ok=True)

        self.run_worker(run, thread=True, group="write", exit_on_error=False)
        self.set_timer(WAIT_NOTICE_AFTER_S, still_waiting)

    def check_action(self, action: str, parameters: tuple) -> Optional[bool]:
        if action == "cancel_write":  # Esc cancels a waiting write, else Esc does what the view says
            return self._waiting_write is not None
        return True

    def action_cancel_write(self) -> None:
        if self._waiting_write is not None:
            self._waiting_write.set()
            self._waiting_write = None
            self.refresh_bindings()
            self._notice("cancelling the write…", ok=True)

    def confirm_cancel(self, job_id: int, status: Optional[str] = None) -> None:
        """Asks first, and only for a job that can be cancelled (queued or running)."""
        from ctxsim.tui.actions import cancel_job
        from ctxsim.tui.screens.confirm import ConfirmScreen

        if self.refuse_write(f"cancel job {job_id}"):
            return
        if status is not None and status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            self._notice(f"job {job_id} is {status}: only queued or running jobs can be cancelled", ok=False)
            return

        def answer(yes: Optional[bool]) -> None:
            if yes:
                self._write(cancel_job, job_id)

        self.push_screen(ConfirmScreen(f"Cancel job {job_id}?"), answer)

    def retry(self, job_id: int, status: Optional[str] = None) -> None:
        from ctxsim.tui.actions import retry_job

        if self.refuse_write(f"retry job {job_id}"):
            return
        if status is not None and status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            self._notice(f"job {job_id} is {status}: only failed or cancelled jobs can be retried", ok=False)
            return
        self._write(retry_job, job_id)

    def reprioritise(self, job_id: int, delta: int, status: Optional[str] = None) -> None:
        from ctxsim.tui.actions import change_priority

        if self.refuse_write(f"change the priority of job {job_id}"):
            return
        if status is not None and status != JobStatus.QUEUED:
            self._notice(f"job {job_id} is {status}: only queued jobs have a priority to change", ok=False)
            return
        self._write(change_priority, job_id, delta)

    def on_action_done(self, msg: ActionDone) -> None:
        if self._waiting_write is not None:
            self._waiting_write = None
            self.refresh_bindings()
        self._notice(msg.text, msg.ok)
        self.action_refresh_now()

    def _notice(self, text: str, ok: bool) -> None:
        from ctxsim.tui.widgets.status_line import StatusLine

        for line in self.screen.query(StatusLine):
            line.set_notice(text if ok else f"error: {text}")
