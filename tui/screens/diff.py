"""Two runs' configs side by side: only the keys whose values differ (``d`` on two marked runs)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header

from ctxsim.registry import history
from ctxsim.tui.format import config_diff
from ctxsim.tui.messages import DiffLoaded, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.keyed_table import KeyedTable
from ctxsim.tui.widgets.status_line import StatusLine


class DiffScreen(DashScreen):
    VIEW_NAME = "Config diff"
    HELP = "The configuration keys whose values differ between the two marked runs."
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back")]

    def __init__(self, a: int, b: int, **kw) -> None:
        super().__init__(**kw)
        self.a, self.b = a, b
        self.rows: list[tuple[str, str, str]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield KeyedTable((("key", "Key"), ("a", f"#{self.a}"), ("b", f"#{self.b}")), id="diff")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(KeyedTable).focus()
        self.poll()

    def load(self) -> None:
        cfgs = history.job_configs(self.dash.read_reg, [self.a, self.b])
        self.post_message(DiffLoaded(self.a, self.b, cfgs.get(self.a), cfgs.get(self.b)))

    def on_diff_loaded(self, msg: DiffLoaded) -> None:
        if msg.a_config is None or msg.b_config is None:
            self.rows = []
            self.query_one(KeyedTable).sync([])
            return
        self.rows = config_diff(msg.a_config, msg.b_config)
        self.query_one(KeyedTable).sync([(k, [k, va, vb]) for k, va, vb in self.rows])

    def after_load(self, msg: RegistryStatus) -> None:
        self.status.set_info(f"{len(self.rows)} keys differ between #{self.a} and #{self.b}"
                             if self.rows else f"#{self.a} and #{self.b}: no difference (or a job is gone)")
