"""One line at the bottom: what the dashboard is showing, how fresh it is, and any problem."""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    """Shows ``info`` (dim) or, while a read or write fails, ``problem`` (highlighted)."""

    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    StatusLine.-problem { background: $error 30%; color: $text; }
    StatusLine.-notice { background: $warning 25%; color: $text; }
    """

    def __init__(self, **kw) -> None:
        super().__init__("", **kw)
        self.info = ""
        self.problem: Optional[str] = None
        self.notice: Optional[str] = None

    def set_info(self, text: str) -> None:
        self.info = text
        self._show()

    def set_problem(self, text: Optional[str]) -> None:
        self.problem = text
        self._show()

    def set_notice(self, text: Optional[str]) -> None:
        """A transient message (result of an action, a stale worker)."""
        self.notice = text
        self._show()

    @property
    def text(self) -> str:
        parts = [p for p in (self.problem, self.notice, self.info) if p]
        return " · ".join(parts)

    def _show(self) -> None:
        self.set_class(self.problem is not None, "-problem")
        self.set_class(self.problem is None and bool(self.notice), "-notice")
        self.update(Text(self.text, no_wrap=True, overflow="ellipsis"))
