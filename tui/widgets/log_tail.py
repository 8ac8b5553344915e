"""The tail of a run's ``stdout.log``, following the file as it grows (lines come from a worker)."""

from __future__ import annotations

from textual.widgets import Log


class LogTail(Log):
    """A Log capped at ``max_lines`` that scrolls with new lines unless the user scrolled up."""

    DEFAULT_CSS = """
    LogTail { height: 1fr; border: round $panel; }
    """

    def __init__(self, max_lines: int = 5000, **kw) -> None:
        super().__init__(max_lines=max_lines, highlight=False, auto_scroll=True, **kw)
        self.path_label = ""

    def feed(self, lines: list[str], reset: bool) -> None:
        if reset:
            self.clear()
        if lines:
            self.write_lines(lines)
