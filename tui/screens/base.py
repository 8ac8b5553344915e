"""What every dashboard screen shares: a status line and reads in thread workers."""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from textual.screen import Screen

from ctxsim.tui.data import problem_text, timed
from ctxsim.tui.messages import RegistryStatus
from ctxsim.tui.widgets.status_line import StatusLine


class Dashboard(Protocol):
    """What the screens use of the app (``ctxsim.tui.app.CtxsimApp``): its state and its actions.
    A protocol, so that screens never import the app module that imports them."""

    read_reg: Any  # the read-only registry handle, read in thread workers
    readonly: bool
    label: str
    clock: Callable[[], Any]
    stale_after_s: float
    show_timings: bool
    baselines_changed: bool
    reference: Any  # ctxsim.tui.data.ReferenceCache: the paper's numbers and curves, shared
    last_read_ms: Optional[float]
    gpu_probe: Callable[[], Optional[list]]

    def bell_and_notice(self, text: str, ok: bool = True) -> None: ...
    def open_detail(self, job_id: int, tab: Optional[str] = None) -> None: ...
    def open_diff(self, a: int, b: int) -> None: ...
    def open_compare(self, job_ids: list[int]) -> None: ...
    def open_paper_table(self, resolution: int = 224) -> None: ...
    def clone_into_form(self, job: dict) -> None: ...
    def copy_run_command(self, job: dict) -> None: ...
    def confirm_cancel(self, job_id: int, status: Optional[str] = None) -> None: ...
    def retry(self, job_id: int, status: Optional[str] = None) -> None: ...
    def reprioritise(self, job_id: int, delta: int, status: Optional[str] = None) -> None: ...


class DashScreen(Screen):
    """A screen that polls the registry: ``poll()`` runs ``load()`` in a thread worker unless one
    is still running (a slow or locked database never piles up threads or blocks the UI)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._in_flight = False
        self.loads = 0  # completed loads (tests wait on this)
        self.skip_resume_poll = False  # set when a read just finished before the screen was shown

    @property
    def dash(self) -> Dashboard:
        return self.app  # type: ignore[return-value]

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    def set_warnings(self, warnings: list[str]) -> None:
        """The status line's warnings, ending with "read-only registry" on a registry opened read-only."""
        from ctxsim.tui.writes import READONLY_NOTICE

        self.status.set_warnings([*warnings, READONLY_NOTICE] if getattr(self.dash, "readonly", False) else warnings)

    def on_mount(self) -> None:
        if getattr(self.dash, "readonly", False):
            self.set_warnings([])

    def load(self) -> None:
        """Reads the registry and posts messages (runs in a thread; override)."""

    def poll(self) -> None:
        if self._in_flight:
            return
        self._in_flight = True
        self.run_worker(self._guarded(self.load), thread=True, group="poll", exit_on_error=False)

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                _, ms = timed(fn)
                self.post_message(RegistryStatus(None, ms))
            except Exception as e:  # noqa: BLE001 - any read failure becomes a status line
                self.post_message(RegistryStatus(problem_text(self.dash.read_reg, e)))
            finally:
                self._in_flight = False

        return run

    def on_registry_status(self, msg: RegistryStatus) -> None:
        self.loads += 1
        self.status.set_problem(msg.problem)
        if msg.problem is None and msg.elapsed_ms is not None:
            self.dash.last_read_ms = msg.elapsed_ms
        self.after_load(msg)

    def after_load(self, msg: RegistryStatus) -> None:
        """Hook: the status line's info after each load."""

    def on_screen_resume(self) -> None:
        if self.skip_resume_poll:
            self.skip_resume_poll = False
            return
        self.poll()
