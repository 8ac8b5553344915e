"""The runs table: every job with progress, ETA, best R@1 and the gap to the paper; sortable.

Columns come in order of importance (``format.RUN_COLUMNS``): the ID column stays fixed on the
left, the key columns (status, epoch, best R@1, Δ paper, ETA) are always shown and the others
appear as the width allows, so an 80-column terminal shows what matters without scrolling.
"""

from __future__ import annotations

from typing import Iterable, Optional

from rich.text import Text
from textual import events
from textual.message import Message

from ctxsim.tui.format import KEY_COLUMNS, OPTIONAL_COLUMNS, RUN_COLUMNS, RunFilter, RunRow, cell_width, fit_columns, order_rows
from ctxsim.tui.widgets.keyed_table import KeyedTable

MARK = "●"
LABELS = dict(RUN_COLUMNS)
ARROW_WIDTH = 2  # " ▼" after the sorted column's label


class RunsTable(KeyedTable):
    """Holds all RunRows; shows the filtered, sorted ones; marks rows picked for comparison."""

    class Opened(Message):
        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, **kw) -> None:
        kw.setdefault("fixed_columns", 1)
        super().__init__([c for c in RUN_COLUMNS if c[0] in KEY_COLUMNS], **kw)
        self.run_rows: dict[int, RunRow] = {}
        self.filter = RunFilter()
        self.sort_key = "id"
        self.sort_reverse = True
        self.marked: set[int] = set()
        self.extra_columns: set[str] = set()  # OPTIONAL_COLUMNS shown on demand
        self._widths: dict[str, int] = {k: cell_width(label) for k, label in RUN_COLUMNS}
        self.shown_count = 0

    # --- data -------------------------------------------------------------------------------
    def set_rows(self, rows: Iterable[RunRow], changed: Optional[set[int]] = None) -> None:
        """Replaces the data; ``changed`` (ids) limits the cell comparison to those rows."""
        self.run_rows = {r.id: r for r in rows}
        self.marked &= set(self.run_rows)
        for jid in (self.run_rows if changed is None else changed):
            r = self.run_rows.get(jid)
            if r is None:
                continue
            for k, v in r.cells.items():
                w = cell_width(v) + (1 if k == "id" else 0)  # the mark
                if w > self._widths.get(k, 0):
                    self._widths[k] = w
        if self._fit():
            changed = None
        self.redraw(changed)

    def set_filter(self, flt: RunFilter) -> None:
        self.filter = flt
        self.redraw()

    def sort_by(self, key: str, reverse: Optional[bool] = None) -> None:
        if reverse is None:
            reverse = (not self.sort_reverse) if key == self.sort_key else key in (
                "id", "best", "delta", "progress", "elapsed", "speed")
        self.sort_key, self.sort_reverse = key, reverse
        self._label_sorted_column()
        self.redraw()

    def toggle_column(self, key: str) -> bool:
        """Shows or hides an on-demand column; returns whether it is now shown."""
        self.extra_columns ^= {key}
        self._fit()
        self.redraw()
        return key in self.extra_columns

    def visible_rows(self) -> list[RunRow]:
        return order_rows(self.run_rows.values(), self.filter, self.sort_key, self.sort_reverse)

    def redraw(self, changed: Optional[set[int]] = None) -> None:
        out = []
        for r in self.visible_rows():
            cells = [r.cells[k] for k in self._col_keys]
            if r.id in self.marked:
                cells[0] = Text(f"{MARK}{r.cells['id']}", style="bold magenta")
            out.append((str(r.id), cells))
        self.shown_count = len(out)
        self.sync(out, None if changed is None else {str(i) for i in changed})

    # --- columns by width ---------------------------------------------------------------------
    @property
    def shown_columns(self) -> list[str]:
        return list(self._col_keys)

    def _fit(self) -> bool:
        """Picks the columns that fit the current width; True when the set changed."""
        width = self.size.width
        if width <= 0:
            return False
        widths = dict(self._widths)
        widths[self.sort_key] = widths.get(self.sort_key, 0) + ARROW_WIDTH
        order = [k for k, _ in RUN_COLUMNS if k not in OPTIONAL_COLUMNS or k in self.extra_columns]
        keys = fit_columns(widths, width - 2, KEY_COLUMNS, order)  # 2: the vertical scrollbar
        here = self.current_key()
        if not self.set_columns([(k, LABELS[k]) for k in keys]):
            return False
        self._label_sorted_column()
        if here is not None:
            self.call_after_refresh(self.move_to_key, here)
        return True

    def on_resize(self, _event: events.Resize) -> None:
        if self._fit():
            self.redraw()

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

    def current_row(self) -> Optional[RunRow]:
        jid = self.current_id()
        return self.run_rows.get(jid) if jid is not None else None

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
