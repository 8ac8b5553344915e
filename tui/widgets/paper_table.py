"""The paper's table layout (methods × datasets): per cell the published number and ours, or the
state of the cell's runs; the same cells as ``ctxsim compare --table`` (ctxsim.report.table)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from ctxsim.registry.states import JobStatus
from ctxsim.report.table import CELL_MISSING, table_cells_text
from ctxsim.tui.widgets.keyed_table import KeyedTable

# how an "ours" cell looks by its state: a filled cell plain, a pending one coloured, a missing one dim
STATE_STYLES = {JobStatus.DONE: "", JobStatus.RUNNING: "yellow", JobStatus.QUEUED: "cyan", CELL_MISSING: "dim"}


def paper_table_rows(data: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, list[Any]]], list[str]]:
    """(columns, keyed rows, footnotes) for ``table_data``'s dict: a paper and an ours column per dataset."""
    header, lines, notes = table_cells_text(data)
    columns = [("method", header[0])]
    for ds in data["datasets"]:
        columns += [(f"{ds}-paper", header[len(columns)]), (f"{ds}-ours", header[len(columns) + 1])]
    rows = []
    for row, line in zip(data["rows"], lines):
        cells: list[Any] = [Text(line[0], style="bold")]
        for i, ds in enumerate(data["datasets"]):
            paper, ours = line[1 + 2 * i], line[2 + 2 * i]
            cells += [paper, Text(ours, style=STATE_STYLES.get(row["cells"][ds]["state"], ""))]
        rows.append((row["loss"], cells))
    return columns, rows, notes


class PaperTable(KeyedTable):
    """One row per method; the Method column stays when the others scroll sideways."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("fixed_columns", 1)
        super().__init__([("method", "Method")], **kw)

    def show(self, data: dict[str, Any]) -> list[str]:
        """Shows the table (columns follow its datasets) and returns its footnotes."""
        columns, rows, notes = paper_table_rows(data)
        self.set_columns(columns)
        self.sync(rows)
        return notes
