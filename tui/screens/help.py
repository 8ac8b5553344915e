"""Modal: the keys of the view it was opened from (``?``), scrollable; Esc, q or ? closes it."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ctxsim.tui.bindings import APP_BINDINGS, TABLE_KEYS


def binding_rows(bindings: Iterable[BindingType], key_display) -> list[tuple[str, str]]:
    """(keys, description) for each described binding, keys of one action merged."""
    rows: dict[str, tuple[list[str], str]] = {}
    for b in bindings:
        if not isinstance(b, Binding) or not b.description:
            continue
        keys = [key_display(Binding(k.strip(), b.action, key_display=b.key_display)) for k in b.key.split(",")]
        entry = rows.setdefault(b.action, ([], b.description))
        entry[0].extend(k for k in keys if k not in entry[0])
    return [(" ".join(keys), desc) for keys, desc in rows.values()]


def help_table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
              padding=(0, 1), expand=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for k, d in rows:
        t.add_row(k, d)
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close"),
                Binding("j,down", "scroll(1)", "Down", show=False),
                Binding("k,up", "scroll(-1)", "Up", show=False)]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 90; height: 90%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, view: Screen) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        key = self.app.get_key_display
        name = getattr(self.view, "VIEW_NAME", type(self.view).__name__)
        about = getattr(self.view, "HELP", "")
        sections = [(f"{name}: keys", binding_rows(self.view.BINDINGS, key))]
        if getattr(self.view, "HAS_TABLE", True):
            sections.append(("In tables", list(TABLE_KEYS)))
        app_rows = binding_rows(APP_BINDINGS, key)
        app_rows.append(("^p", "command palette: every action by name"))
        app_rows.append(("Esc", "close a panel / go back"))
        sections.append(("Everywhere", app_rows))
        self.plain = "\n".join([about] + [f"{k}  {d}" for _t, rows in sections for k, d in rows])
        with VerticalScroll(id="help-body"):
            if about:
                yield Static(Text(about), classes="help-about")
            for title, rows in sections:
                yield Static(help_table(title, rows))
            yield Static(Text("Esc, q or ? closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one("#help-body", VerticalScroll).scroll_relative(y=lines, animate=False)
