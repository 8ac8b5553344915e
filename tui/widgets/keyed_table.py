"""A DataTable whose rows are identified by key and updated in place (no flicker, cursor kept)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist, RowKey


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
        kw.setdefault("fixed_columns", 1)  # the key column (ID) stays when the others scroll
        super().__init__(**kw)
        self._col_keys = [k for k, _ in columns]
        self._col_labels = [label for _, label in columns]
        self._order: list[str] = []
        self._cells: dict[str, list[Any]] = {}
        self.cells_updated = 0  # counters for tests and the benchmark
        self.rebuilds = 0
        self.reorders = 0  # syncs that only reordered the rows (a sort)

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "first_row", "First row", show=False),
        Binding("G,end", "last_row", "Last row", show=False),
    ]

    def on_mount(self) -> None:
        for key, label in zip(self._col_keys, self._col_labels):
            self.add_column(label, key=key)

    def action_first_row(self) -> None:
        if self._order:
            self.move_cursor(row=0, animate=False)

    def action_last_row(self) -> None:
        if self._order:
            self.move_cursor(row=len(self._order) - 1, animate=False)

    def set_columns(self, columns: Sequence[tuple[str, str]]) -> bool:
        """Shows these columns instead (the rows are rebuilt by the next ``sync``); False if unchanged."""
        keys = [k for k, _ in columns]
        if keys == self._col_keys:
            return False
        self._col_keys, self._col_labels = keys, [label for _, label in columns]
        self.clear(columns=True)
        for key, label in columns:
            self.add_column(label, key=key)
        self._order, self._cells = [], {}
        return True

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

    def _fit_widths(self, keys: Optional[set[str]] = None) -> None:
        """Sizes every column to its widest cell now (of the rows of ``keys``: those not measured
        before; columns only grow). DataTable measures new rows lazily (on its next idle), so a
        column set or rows rebuilt just before a repaint could be drawn at label width."""
        cells = self._cells.values() if keys is None else [self._cells[k] for k in keys if k in self._cells]
        for i, ck in enumerate(self._col_keys):
            col = self.columns.get(ck)  # type: ignore[call-overload]
            if col is None:
                continue
            widest = max((cell_len(c[i].plain if isinstance(c[i], Text) else str(c[i]))
                          for c in cells if i < len(c)), default=0)
            if widest > col.content_width:
                col.content_width = widest
        self._require_update_dimensions = True

    def _update(self, key: str, i: int, value: Any) -> bool:
        """Writes one cell; True when it was written in place (only its row's render caches dropped)."""
        col = self.columns.get(self._col_keys[i])  # type: ignore[call-overload]
        width = cell_len(value.plain if isinstance(value, Text) else str(value))
        self.cells_updated += 1
        wider = col is not None and width > col.content_width
        if not wider and self._quiet_ok:
            row = self._data.get(RowKey(key))
            if row is not None and ColumnKey(self._col_keys[i]) in row:
                row[ColumnKey(self._col_keys[i])] = value
                return True
        # DataTable re-measures the whole column when asked to fit a cell: ask only when the new
        # value is wider than the column (rare), never on every live update
        self.update_cell(key, self._col_keys[i], value, update_width=wider)
        return False

    # DataTable's update_cell bumps a counter that is part of every render cache key, so one live
    # cell re-renders every visible cell (cost grows with the terminal, ~10x a refresh on a big
    # one). In place, only the changed cells' cached renders (and their rows' lines) are dropped.
    @property
    def _quiet_ok(self) -> bool:
        return all(hasattr(self, a) for a in ("_data", "_row_locations", "_row_render_cache", "_cell_render_cache",
                                              "_row_renderable_cache", "_line_cache"))

    def _add_rows_at_once(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> bool:
        """Fills an empty table as ``add_row`` per row would (same row data, heights and new-row
        marks for DataTable's measuring), in one pass: add_row also re-sorts the columns twice and
        re-sets the cursor reactive for every row, most of a 1,000-row rebuild. False where this
        Textual's internals differ (the caller adds row by row)."""
        try:
            from textual._two_way_dict import TwoWayDict
            from textual.widgets._data_table import Row

            if self._data or self.rows or not isinstance(self._row_locations, TwoWayDict):
                return False
            columns = [c.key for c in self.ordered_columns]
            locations, data, meta = {}, {}, {}
            for i, (key, cells) in enumerate(rows):
                if len(cells) > len(columns):
                    return False
                rk = RowKey(key)
                if rk in locations:
                    raise ValueError(f"duplicate row key {key!r}")
                locations[rk] = i
                data[rk] = dict(zip(columns, list(cells) + [None] * (len(columns) - len(cells))))
                meta[rk] = Row(rk, 1, None, False)
            self._row_locations = TwoWayDict(locations)
            self._data.update(data)
            self.rows.update(meta)
            self._new_rows.update(meta)
        except (ImportError, AttributeError, TypeError):
            return False
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        if rows and len(self.columns) > 0 and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self._update_count += 1
        self.check_idle()
        return True

    def _reorder(self, keys: list[str]) -> bool:
        """Puts the rows in ``keys``' order in place, as DataTable.sort does (its key function sees
        cell values only, not the order wanted): no row is re-added. False where this Textual's
        internals differ (the caller rebuilds)."""
        try:
            from textual._two_way_dict import TwoWayDict

            if not isinstance(self._row_locations, TwoWayDict):
                return False
            self._row_locations = TwoWayDict({RowKey(k): i for i, k in enumerate(keys)})
            self._update_count += 1
        except (ImportError, AttributeError):
            return False
        self._order = keys
        self.refresh()
        return True

    def _drop_caches(self, cells: set[tuple[str, str]]) -> None:
        """Drops the cached renders of these (row key, column key) cells and of their rows' lines."""
        try:
            pairs = {(RowKey(r), ColumnKey(c)) for r, c in cells}
            rows = {r for r, _c in pairs}
            idx = {self._row_locations.get(r) for r in rows}
            for cache, hit in ((self._cell_render_cache, lambda k: (k[0], k[1]) in pairs),
                               (self._row_render_cache, lambda k: k[0] in rows),
                               (self._row_renderable_cache, lambda k: k[1] in idx)):
                for k in [k for k in cache.keys() if hit(k)]:
                    cache.discard(k)
            for k in list(self._line_cache.keys()):  # the painted lines of those rows
                try:
                    if self._get_offsets(k[0])[0] in rows:
                        self._line_cache.discard(k)
                except LookupError:
                    continue
        except Exception:  # noqa: BLE001 - another Textual's internals: fall back to a full re-render
            self._clear_caches()
        self.refresh()

    # ← → scroll by whole columns (a row cursor has no cell to move), never by characters
    def _scroll_stops(self) -> list[int]:
        """The scroll_x values that put each scrollable column right after the fixed ones."""
        starts, x = [], 0
        for col in self.ordered_columns:
            starts.append(x)
            x += col.get_render_width(self)
        fixed = starts[self.fixed_columns] if 0 < self.fixed_columns < len(starts) else 0
        return [s - fixed for s in starts[self.fixed_columns:]]

    def action_cursor_right(self) -> None:
        if self.cursor_type != "row":
            return super().action_cursor_right()
        nxt = next((s for s in self._scroll_stops() if s > self.scroll_x), None)
        self.scroll_to(x=self.max_scroll_x if nxt is None else min(nxt, self.max_scroll_x), animate=False)

    def action_cursor_left(self) -> None:
        if self.cursor_type != "row":
            return super().action_cursor_left()
        prev = [s for s in self._scroll_stops() if s < self.scroll_x]
        self.scroll_to(x=prev[-1] if prev else 0, animate=False)

    def sync(self, rows: Sequence[tuple[str, Sequence[Any]]], only: Optional[set[str]] = None) -> None:
        """``only``: the keys whose cells may have changed (the others are not compared)."""
        keys = [k for k, _ in rows]
        if keys == self._order:
            quiet: set[tuple[str, str]] = set()
            for key, cells in rows:
                if only is not None and key not in only:
                    continue
                old = self._cells[key]
                for i, (a, b) in enumerate(zip(old, cells)):
                    if a != b and self._update(key, i, b):
                        quiet.add((key, self._col_keys[i]))
                self._cells[key] = list(cells)
            if quiet:
                self._drop_caches(quiet)
            return
        here = self.current_key()
        here_idx = self.cursor_row
        scroll_y = self.scroll_y
        if len(keys) == len(self._order) and set(keys) == self._cells.keys() and self._reorder(keys):
            self.reorders += 1  # a sort: the same rows in another order, cells compared as above
            fresh = {k for k, cells in rows if (only is None or k in only) and cells != self._cells[k]}
            for key, cells in rows:
                if key in fresh:
                    for i, (a, b) in enumerate(zip(self._cells[key], cells)):
                        if a != b:
                            self.update_cell(key, self._col_keys[i], b)
                    self._cells[key] = list(cells)
        else:
            self.rebuilds += 1
            fresh = {k for k, cells in rows if self._cells.get(k) != list(cells)}
            self.clear(columns=False)
            self._order = keys
            self._cells = {k: list(c) for k, c in rows}
            if not self._add_rows_at_once(rows):
                for key, cells in rows:
                    self.add_row(*cells, key=key)
            self._fit_widths(fresh)
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
