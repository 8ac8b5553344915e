"""The runs table: every job with progress, best R@1 and the gap to the paper; sortable."""

from __future__ import annotations

from typing import Iterable, Optional

from rich.text import Text
from textual.message import Message

from ctxsim.tui.format import RUN_COLUMNS, RunFilter, RunRow, order_rows
from ctxsim.tui.widgets.keyed_table import KeyedTable

MARK = "●"


class RunsTable(KeyedTable):
    """Holds all RunRows; shows the filtered, sorted ones; marks rows picked for comparison."""

    class Opened(Message):
        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, **kw) -> None:
        super().__init__(RUN_COLUMNS, **kw)
        self.run_rows: dict[int, RunRow] = {}
        self.filter = RunFilter()
        self.sort_key = "id"
        self.sort_reverse = True
        self.marked: set[int] = set()

    # --- data -------------------------------------------------------------------------------
    def set_rows(self, rows: Iterable[RunRow], changed: Optional[set[int]] = None) -> None:
        """Replaces the data; ``changed`` (ids) limits the cell comparison to those rows."""
        self.run_rows = {r.id: r for r in rows}
        self.marked &= set(self.run_rows)
        self.redraw(changed)

    def set_filter(self, flt: RunFilter) -> None:
        self.filter = flt
        self.redraw()

    def sort_by(self, key: str, reverse: Optional[bool] = None) -> None:
        if reverse is None:
            reverse = (not self.sort_reverse) if key == self.sort_key else key in (
                "id", "best", "delta", "progress", "elapsed")
        self.sort_key, self.sort_reverse = key, reverse
        self._label_sorted_column()
        self.redraw()

    def visible_rows(self) -> list[RunRow]:
        return order_rows(self.run_rows.values(), self.filter, self.sort_key, self.sort_reverse)

    def redraw(self, changed: Optional[set[int]] = None) -> None:
        out = []
        for r in self.visible_rows():
            cells = [r.cells[k] for k in self._col_keys]
            if r.id in self.marked:
                cells[0] = Text(f"{MARK}{r.cells['id']}", style="bold magenta")
            out.append((str(r.id), cells))
        self.sync(out, None if changed is None else {str(i) for i in changed})

    def _label_sorted_column(self) -> None:
        arrow = " ▼" if self.sort_reverse else " ▲"
        for key, label in zip(self._col_keys, self._col_labels):
            col = self.columns.get(key)  # type: ignore[arg-type]
            if col is not None:
                col.label = Text(label + (arrow if key == self.sort_key else ""))
                if key == self.sort_key:
                    col.content_width = max(col.content_width, len(label) + len(arrow))
        # DataTable has no public call to relabel a column: drop its render caches so the header redraws
        self._clear_caches()
        self._require_update_dimensions = True
        self.refresh()

    # --- selection ----------------------------------------------------------------------------
    def current_id(self) -> Optional[int]:
        k = self.current_key()
        return int(k) if k is not None else None

    def toggle_mark(self) -> Optional[int]:
        jid = self.current_id()
        if jid is None:
            return None
        self.marked.symmetric_difference_update({jid})
        self.redraw({jid})
        return jid

    def on_data_table_header_selected(self, event: KeyedTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Opened(int(event.row_key.value)))
