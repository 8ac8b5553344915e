"""One line at the bottom: warnings first (never cut), then the last action's notice, then what the
dashboard is showing and how fresh it is (cut with an ellipsis when the terminal is narrow)."""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    """Shows ``problem`` (a failing read or write) and ``warnings`` (dead workers, lost jobs) first,
    then ``notice`` and ``info``."""

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
        self.warnings: list[str] = []

    def set_info(self, text: str) -> None:
        self.info = text
        self._show()

    def set_problem(self, text: Optional[str]) -> None:
        self.problem = text
        self._show()

    def set_warnings(self, warnings: list[str]) -> None:
        if warnings != self.warnings:
            self.warnings = list(warnings)
            self._show()

    def set_notice(self, text: Optional[str]) -> None:
        """A transient message (result of an action, a stale worker)."""
        self.notice = text
        self._show()

    @property
    def text(self) -> str:
        parts = [p for p in (self.problem, *(f"⚠ {w}" for w in self.warnings), self.notice, self.info) if p]
        return " · ".join(parts)

    def _show(self) -> None:
        self.set_class(self.problem is not None, "-problem")
        self.set_class(self.problem is None and bool(self.notice or self.warnings), "-notice")
        t = Text(no_wrap=True, overflow="ellipsis")
        for i, (part, style) in enumerate(p for p in ((self.problem, "bold"),
                                                      *((f"⚠ {w}", "bold") for w in self.warnings),
                                                      (self.notice, ""), (self.info, "")) if p[0]):
            if i:
                t.append(" · ")
            t.append(part, style=style)
        self.update(t)
