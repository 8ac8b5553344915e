"""Status / dataset / loss selectors and a text search over the runs table."""

from __future__ import annotations

from typing import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Select

from ctxsim.registry.models import JOB_STATUSES
from ctxsim.tui.format import RunFilter


class FilterBar(Horizontal):
    """Posts ``FilterBar.Changed`` with a RunFilter whenever a selector or the search changes."""

    DEFAULT_CSS = """
    FilterBar { height: 3; }
    FilterBar Select { width: 1fr; max-width: 20; min-width: 13; }
    FilterBar #search { width: 2fr; min-width: 16; }
    """

    class Changed(Message):
        def __init__(self, flt: RunFilter) -> None:
            super().__init__()
            self.filter = flt

    def __init__(self, datasets: Iterable[str], losses: Iterable[str], **kw) -> None:
        super().__init__(**kw)
        self._datasets = list(datasets)
        self._losses = list(losses)

    def compose(self) -> ComposeResult:
        yield Select([(s, s) for s in (*JOB_STATUSES, "stale")], prompt="status", id="f-status")
        yield Select([(d, d) for d in self._datasets], prompt="dataset", id="f-dataset")
        yield Select([(x, x) for x in self._losses], prompt="loss", id="f-loss")
        yield Input(placeholder="/ search: name, tag, lr=1e-4…", id="search")

    def current(self) -> RunFilter:
        def val(sel_id: str):
            v = self.query_one(sel_id, Select).value
            return None if v is Select.NULL or v is None else str(v)

        return RunFilter(status=val("#f-status"), dataset=val("#f-dataset"), loss=val("#f-loss"),
                         text=self.query_one("#search", Input).value)

    def set_values(self, status=None, dataset=None, loss=None, text=None) -> None:
        """Sets selectors programmatically (keys, tests); None leaves one as it is."""
        for sel_id, v in (("#f-status", status), ("#f-dataset", dataset), ("#f-loss", loss)):
            if v is not None:
                self.query_one(sel_id, Select).value = v if v else Select.NULL
        if text is not None:
            self.query_one("#search", Input).value = text

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self.current()))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self.current()))
