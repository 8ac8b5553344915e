"""``ctxsim compare --table 224|256``: the paper's table layout (methods × datasets) with, per cell,
the published number and ours (mean ± 95% CI over seeds, n), or the state of the cell's runs
(queued, running, missing). The cells and their runs are those of ``ctxsim.report.reproduce``.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from ctxsim.baselines import FINAL_KIND_PRIORITY, display_method, list_baselines
from ctxsim.registry.states import JobStatus
from ctxsim.report.compare import _pick_reference, final_and_best, to_percent
from ctxsim.report.render import MISSING, TEST_SELECTED_MARK, _md_cell, fmt_paper
from ctxsim.report.reproduce import ACTIVE, cell_runs, table_cells
from ctxsim.report.stats import seed_summary

_DATASET_TITLES = {"cub": "CUB", "cars": "Cars", "sop": "SOP", "inat": "iNat", "inshop": "In-Shop"}


CELL_MISSING = "missing"  # the state of a table cell with no run yet


def table_data(reg, resolution: int, datasets: Optional[Iterable[str]] = None,
               losses: Optional[Iterable[str]] = None, metric: str = "R@1") -> dict[str, Any]:
    """The table as data: ``{"resolution", "title", "metric", "datasets", "rows": [{"loss",
    "method", "cells": {dataset: cell}}]}``; a cell has ``paper`` (percent or None), ``paper_kind``,
    ``paper_source``, ``n``, ``mean``, ``std``, ``ci`` (half width of the 95% interval), ``run_ids``,
    ``test_selected``, ``queued``, ``running`` and ``state``: done (at least one comparable
    finished run), else running, queued (job states) or CELL_MISSING."""
    t, cells = table_cells(resolution, datasets, losses)
    runs = cell_runs(reg, t.resolution, cells)
    refs = {ds: list_baselines(reg, dataset=ds) for ds in {d for d, _ in cells}}
    ds_order = [d for d in t.datasets if any(c[0] == d for c in cells)]
    ls_order = [x for x in t.losses if any(c[1] == x for c in cells)]
    rows = []
    for loss in ls_order:
        row = {"loss": loss, "method": display_method(loss), "cells": {}}
        for ds in ds_order:
            members = runs[(ds, loss)]
            done = [j for j in members if j["status"] == JobStatus.DONE]
            values, ids, n_test = [], [], 0
            for j in done:
                final, _ = final_and_best(j, metric)
                if final is not None:
                    values.append(to_percent(final))
                    ids.append(j["id"])
                    n_test += int(j["selected_on_test"])
            s = seed_summary(values)
            ref = _pick_reference(refs[ds], loss, t.resolution, metric, FINAL_KIND_PRIORITY)
            n_queued = sum(j["status"] == JobStatus.QUEUED for j in members)
            n_running = sum(j["status"] == JobStatus.RUNNING for j in members)
            state = (JobStatus.DONE if s.n else JobStatus.RUNNING if n_running else JobStatus.QUEUED if n_queued
                     else CELL_MISSING)
            row["cells"][ds] = {
                "paper": ref["value"] if ref else None, "paper_kind": ref["kind"] if ref else None,
                "paper_source": ref["source"] if ref else None,
                "n": s.n, "mean": s.mean, "std": s.std, "ci": s.half_width, "run_ids": ids,
                "test_selected": n_test, JobStatus.QUEUED: n_queued, JobStatus.RUNNING: n_running, "state": state,
            }
        rows.append(row)
    return {"resolution": t.resolution, "title": t.title, "metric": metric, "datasets": ds_order, "rows": rows}


def fmt_ours(cell: dict[str, Any]) -> str:
    """``68.20 ± 0.45 (n=3)`` (± = half width of the 95% CI), ``68.20 (n=1)``, or the cell's state;
    pending runs of a filled cell are appended (``+1 running``)."""
    pending = [f"{cell[k]} {k}" for k in ACTIVE if cell[k]]
    if cell["state"] != "done":
        return ", ".join(pending) if pending else CELL_MISSING
    mark = f" {TEST_SELECTED_MARK}" if cell["test_selected"] else ""
    text = f"{cell['mean']:.2f}" + (f" ± {cell['ci']:.2f}" if cell["ci"] is not None else "") + f" (n={cell['n']}){mark}"
    return text + "".join(f" +{p}" for p in pending)


def table_cells_text(data: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells, footnotes) of the table: per dataset a paper column and an ours column."""
    sources: list[str] = []

    def paper(cell: dict[str, Any]) -> str:
        if cell["paper"] is None:
            return MISSING
        if cell["paper_source"] not in sources:
            sources.append(cell["paper_source"])
        return f"{fmt_paper(cell['paper'])} [{sources.index(cell['paper_source']) + 1}]"

    header = ["Method"]
    for ds in data["datasets"]:
        title = _DATASET_TITLES.get(ds, ds)
        header += [f"{title} paper", f"{title} ours"]
    lines = []
    for row in data["rows"]:
        line = [row["method"]]
        for ds in data["datasets"]:
            cell = row["cells"][ds]
            line += [paper(cell), fmt_ours(cell)]
        lines.append(line)
    kinds = {row["cells"][d]["paper_kind"] for row in data["rows"] for d in data["datasets"]} - {None}
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    notes.append(
        f"{data['metric']} in percent, {data['resolution']} recipes under the reference profile. ours = mean "
        "± half width of the 95% Student-t interval over seeds, n = finished runs that are comparable "
        "(the cell's recipe on the reference split); queued/running/missing = no such run has finished yet. "
        f"{MISSING} = no published number stored (the paper's tables are imported with `ctxsim baselines "
        "--import`, docs/reference-implementation.md §6.3)."
    )
    if "figure_read_approx" in kinds:
        notes.append("figure_read_approx numbers were read off a figure by eye (about ±0.3).")
    if any(row["cells"][d]["test_selected"] for row in data["rows"] for d in data["datasets"]):
        notes.append(f"{TEST_SELECTED_MARK} the reported model was selected on the test set "
                     "(docs/reference-implementation.md §9.6), as the published 256 numbers were.")
    return header, lines, notes


def table_markdown(data: dict[str, Any]) -> str:
    """The table as GitHub-flavoured markdown, with its notes."""
    header, lines, notes = table_cells_text(data)
    out = [f"**Table {data['resolution']}** — {data['title']}: {data['metric']}", "",
           "| " + " | ".join(header) + " |",
           "|---|" + "|".join("---:" for _ in header[1:]) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in line) + " |" for line in lines]
    out.append("")
    out += [_md_cell(n) + "  " for n in notes]
    return "\n".join(out).rstrip() + "\n"
