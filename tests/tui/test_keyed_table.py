"""KeyedTable's three ways to sync: cells in place (same rows, same order), a reorder in place (a
sort: same rows), and a rebuild filled in one pass (a filter). Each must leave the table exactly as
DataTable's own add_row would."""

from __future__ import annotations

import random

from rich.text import Text
from textual.app import App, ComposeResult
from tui_helpers import sync

from ctxsim.tui.widgets.keyed_table import KeyedTable

COLUMNS = [("id", "ID"), ("name", "Name"), ("value", "Value")]


def _rows(ids, tag=""):
    return [(str(i), [str(i), Text(f"run-{i}{tag}", style="bold") if i % 3 == 0 else f"run-{i}{tag}", f"{i * 1.5:.1f}"])
            for i in ids]


class _App(App):
    def __init__(self, table: KeyedTable) -> None:
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        yield self.table


def _state(t: KeyedTable):
    """What the table shows, read through DataTable's public API only."""
    keys = [t.coordinate_to_cell_key((i, 0)).row_key.value for i in range(t.row_count)]
    cells = [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]
    heights = [t.rows[t.coordinate_to_cell_key((i, 0)).row_key].height for i in range(t.row_count)]
    return keys, cells, heights, t.cursor_row, t.virtual_size.height


@sync
async def test_sort_filter_and_update_leave_the_table_as_row_by_row_adds_would():
    fast, plain = KeyedTable(COLUMNS), KeyedTable(COLUMNS)
    plain._add_rows_at_once = lambda rows: False  # the reference: DataTable.add_row per row
    plain._reorder = lambda keys: False  # and a rebuild for every new order
    plain._fit_widths = lambda keys=None: KeyedTable._fit_widths(plain)  # measuring every row each time
    ids = list(range(1, 301))
    rng = random.Random(0)
    steps = [ids[::-1]]
    for _ in range(6):
        order = ids[:]
        rng.shuffle(order)
        steps.append(order)  # a sort: the same rows
        steps.append([i for i in order if i % 4])  # a filter: fewer rows
        steps.append(order)  # the filter cleared
    for table in (fast, plain):
        async with _App(table).run_test(size=(60, 20)) as pilot:
            for k, order in enumerate(steps):
                table.sync(_rows(order, tag="*" if k == 5 else ""))  # step 5 also changes every name
                # widths before DataTable's own lazy measuring (on idle): what the next frame draws
                table.early = getattr(table, "early", []) + [[c.content_width for c in table.ordered_columns]]
                table.move_to_key(str(order[len(order) // 2]))
                await pilot.pause()
                table.result = getattr(table, "result", []) + [_state(table)]
            table.widths = [c.content_width for c in table.ordered_columns]
    assert fast.result == plain.result
    assert fast.widths == plain.widths and fast.early == plain.early
    assert fast.reorders >= 6 and plain.reorders == 0  # the sorts went in place
    assert fast.rebuilds < plain.rebuilds


@sync
async def test_a_reorder_keeps_the_cursor_on_its_row_and_updates_changed_cells():
    table = KeyedTable(COLUMNS)
    async with _App(table).run_test(size=(60, 20)) as pilot:
        table.sync(_rows(range(1, 51)))
        table.move_to_key("20")
        await pilot.pause()
        rows = _rows(range(50, 0, -1))
        rows[0] = ("50", ["50", "renamed", "75.0"])
        table.sync(rows)
        await pilot.pause()
        assert table.reorders == 1 and table.rebuilds == 1  # the first sync built it
        assert table.current_key() == "20"
        assert [str(c) for c in table.get_row_at(0)] == ["50", "renamed", "75.0"]
        assert table.coordinate_to_cell_key((49, 0)).row_key.value == "1"
