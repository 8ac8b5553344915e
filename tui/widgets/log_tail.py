"""The tail of a run's ``stdout.log``, following the file as it grows (lines come from a worker)."""

from __future__ import annotations

import textwrap

from textual import events
from textual.widgets import Log


class LogTail(Log):
    """A Log capped at ``max_lines`` that scrolls with new lines unless the user scrolled up.

    Long lines scroll sideways; with ``wrapped`` on (the detail's ``W``) they are folded to the
    width instead, so every line's whole text is on screen."""

    DEFAULT_CSS = """
    LogTail { height: 1fr; border: round $panel; }
    """

    def __init__(self, max_lines: int = 5000, **kw) -> None:
        super().__init__(max_lines=max_lines, highlight=False, auto_scroll=True, **kw)
        self.path_label = ""
        self.wrapped = False
        self._raw: list[str] = []  # the lines as written (the shown ones may be folded)
        self._max_raw = max_lines
        self._wrapped_at = 0

    def feed(self, lines: list[str], reset: bool) -> None:
        if reset:
            self.clear()
        if lines:
            self._raw.extend(lines)
            del self._raw[:-self._max_raw]
            self.write_lines(self._shown(lines))

    def clear(self) -> "LogTail":
        self._raw = []
        return super().clear()

    def set_wrap(self, wrap: bool) -> None:
        """Folds long lines to the width (True) or lets them scroll sideways (False)."""
        self.wrapped = wrap
        self._rewrite()

    def _fold_width(self) -> int:
        return max(20, self.scrollable_content_region.width - 1)

    def _shown(self, lines: list[str]) -> list[str]:
        if not self.wrapped:
            return lines
        width = self._wrapped_at = self._fold_width()
        out: list[str] = []
        for line in lines:
            out += textwrap.wrap(line, width, subsequent_indent="  ", replace_whitespace=False,
                                 drop_whitespace=False) or [""]
        return out

    def _rewrite(self) -> None:
        raw = self._raw
        super().clear()
        self._raw = raw
        self.write_lines(self._shown(raw))

    def on_resize(self, _event: events.Resize) -> None:
        if self.wrapped and self._raw and self._fold_width() != self._wrapped_at:
            self._rewrite()
