"""Runs side by side with the paper's number (and its provenance) and the difference."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from ctxsim.tui.format import fmt_delta, pct
from ctxsim.tui.widgets.keyed_table import KeyedTable

COMPARE_COLUMNS = (
    ("id", "ID"), ("run", "Dataset/loss/res"), ("status", "Status"), ("best", "Best R@1"),
    ("last", "Last R@1"), ("map", "MAP@R"), ("paper", "Paper R@1"), ("delta", "Δ"),
    ("kind", "Provenance"), ("source", "Source"),
)


def compare_cells(run: dict[str, Any]) -> list[Any]:
    """Cells for one run dict (``queries.runs_table`` row + "paper": paper_numbers entry or None)."""
    summ = run.get("summaries") or {}
    r1, mp = summ.get("R@1"), summ.get("MAP@R")
    best = pct(r1["best"]) if r1 else None
    ref = run.get("paper")
    delta = best - ref["value"] if best is not None and ref else None
    spec = f"{run['dataset']}/{run['loss']}" + (f"/{run['resolution']}" if run.get("resolution") else "")
    cells = [
        str(run["id"]), spec, run["status"],
        f"{best:.1f} @{r1['best_step']}" if r1 else "",
        f"{pct(r1['last']):.1f}" if r1 else "",
        f"{pct(mp['last']):.1f}" if mp else "",
        f"{ref['value']:.1f}" if ref else "",
        fmt_delta(delta),
        ref["kind"] if ref else Text("no paper number", style="dim"),
        ref["source"] if ref else "",
    ]
    if run.get("comparable") is False:  # not the recipe on the reference split (ctxsim.report.compare)
        cells[7] = "n/c" if delta is not None else cells[7]
        cells = [Text(c.plain if isinstance(c, Text) else str(c), style="dim") for c in cells]
    return cells


class CompareTable(KeyedTable):
    def __init__(self, **kw) -> None:
        super().__init__(COMPARE_COLUMNS, **kw)

    def show(self, runs: list[dict[str, Any]]) -> None:
        self.sync([(str(r["id"]), compare_cells(r)) for r in runs])
