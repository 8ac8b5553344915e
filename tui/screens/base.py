"""What every dashboard screen shares: a status line and reads in thread workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from textual.screen import Screen

from ctxsim.tui.data import problem_text, timed
from ctxsim.tui.messages import RegistryStatus
from ctxsim.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from ctxsim.tui.app import CtxsimApp


class DashScreen(Screen):
    """A screen that polls the registry: ``poll()`` runs ``load()`` in a thread worker unless one
    is still running (a slow or locked database never piles up threads or blocks the UI)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._in_flight = False
        self.loads = 0  # completed loads (tests wait on this)

    @property
    def dash(self) -> "CtxsimApp":
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
        self.poll()
