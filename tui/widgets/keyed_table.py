"""A DataTable whose rows are identified by key and updated in place (no flicker, cursor kept)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class KeyedTable(DataTable):
    """``sync(rows)`` makes the table show exactly ``rows`` ([(key, [cell, ...]), ...]).

    When the keys and their order are unchanged only the cells that differ are updated
    (``update_cell``); otherwise the rows are rebuilt in one go and the cursor returns to the
    row it was on (by key), with the scroll offset kept.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[tuple[str, str]], **kw: Any) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self._col_keys = [k for k, _ in columns]
        self._col_labels = [label for _, label in columns]
        self._order: list[str] = []
        self._cells: dict[str, list[Any]] = {}
        self.cells_updated = 0  # counters for tests and the benchmark
        self.rebuilds = 0

    def on_mount(self) -> None:
        for key, label in zip(self._col_keys, self._col_labels):
            self.add_column(label, key=key)

    @property
    def row_keys(self) -> list[str]:
        return list(self._order)

    def current_key(self) -> Optional[str]:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def move_to_key(self, key: str) -> bool:
        try:
            idx = self.get_row_index(key)
        except RowDoesNotExist:
            return False
        self.move_cursor(row=idx, animate=False)
        return True

    def _update(self, key: str, i: int, value: Any) -> None:
        # DataTable re-measures the whole column when asked to fit a cell: ask only when the new
        # value is wider than the column (rare), never on every live update
        col = self.columns.get(self._col_keys[i])  # type: ignore[call-overload]
        width = cell_len(value.plain if isinstance(value, Text) else str(value))
        self.update_cell(key, self._col_keys[i], value,
                         update_width=col is not None and width > col.content_width)
        self.cells_updated += 1

    def sync(self, rows: Sequence[tuple[str, Sequence[Any]]], only: Optional[set[str]] = None) -> None:
        """``only``: the keys whose cells may have changed (the others are not compared)."""
        keys = [k for k, _ in rows]
        if keys == self._order:
            for key, cells in rows:
                if only is not None and key not in only:
                    continue
                old = self._cells[key]
                for i, (a, b) in enumerate(zip(old, cells)):
                    if a != b:
                        self._update(key, i, b)
                self._cells[key] = list(cells)
            return
        here = self.current_key()
        here_idx = self.cursor_row
        scroll_y = self.scroll_y
        self.rebuilds += 1
        self.clear(columns=False)
        self._order = keys
        self._cells = {k: list(c) for k, c in rows}
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if not keys:
            return
        if here is not None and here in self._cells:
            target = keys.index(here)
        else:
            target = min(max(here_idx, 0), len(keys) - 1)
        self.move_cursor(row=target, animate=False, scroll=False)
        self.scroll_to(y=scroll_y, animate=False, immediate=True)
        if not (self.scroll_y <= target < self.scroll_y + max(1, self.size.height - 1)):
            self.move_cursor(row=target, animate=False, scroll=True)
