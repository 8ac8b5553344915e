"""Selected runs side by side with the paper's numbers (provenance shown), deltas, curves overlaid."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header

from ctxsim.registry import queries
from ctxsim.tui.data import SeriesCache
from ctxsim.tui.format import paper_key, pct
from ctxsim.tui.messages import CompareLoaded, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.compare_table import CompareTable
from ctxsim.tui.widgets.curve_plot import CurvePlot
from ctxsim.tui.widgets.status_line import StatusLine

COMPARE_KEYS = ("R@1", "epoch/loss")


class CompareScreen(DashScreen):
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back"),
                Binding("enter", "open", "Detail")]

    def __init__(self, job_ids: list[int], **kw) -> None:
        super().__init__(**kw)
        self.job_ids = list(job_ids)
        self.caches = {j: SeriesCache(j) for j in self.job_ids}
        self.runs: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield CompareTable(id="compare")
        with Horizontal(id="compare-plots"):
            yield CurvePlot("R@1 % vs epoch (paper dashed)", xlabel="epoch", id="cmp-r1")
            yield CurvePlot("epoch loss vs epoch", xlabel="epoch", id="cmp-loss")
        yield StatusLine()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(CompareTable).focus()
        self.poll()

    def load(self) -> None:
        reg = self.dash.read_reg
        runs = queries.runs_table(reg, ids=self.job_ids, summary_keys=("R@1", "MAP@R", "epoch/loss"))
        runs.sort(key=lambda r: self.job_ids.index(r["id"]))
        paper = queries.paper_numbers(reg)
        curves: dict[tuple, list] = {}
        series = {}
        for r in runs:
            r["paper"] = paper.get(paper_key(r))
            key = (r["dataset"], r["loss"], r.get("resolution"))
            if key not in curves:
                curves[key] = queries.paper_curve(reg, *key)
            cache = self.caches[r["id"]]
            cache.update(reg, {k: v for k, v in r["summaries"].items() if k in COMPARE_KEYS})
            series[r["id"]] = {k: list(v) for k, v in cache.points.items()}
        self.post_message(CompareLoaded(runs, series, curves))

    def on_compare_loaded(self, msg: CompareLoaded) -> None:
        self.runs = msg.runs
        self.query_one(CompareTable).show(msg.runs)
        r1 = {f"#{j}": [(s, pct(v)) for s, v in pts.get("R@1", [])] for j, pts in msg.series.items()}
        loss = {f"#{j}": pts.get("epoch/loss", []) for j, pts in msg.series.items()}
        ref = {f"paper {d}/{lo}/{res or '-'}": c for (d, lo, res), c in msg.paper_curves.items() if c}
        self.query_one("#cmp-r1", CurvePlot).set_series(r1, ref)
        self.query_one("#cmp-loss", CurvePlot).set_series(loss)

    def after_load(self, msg: RegistryStatus) -> None:
        missing = sorted(set(self.job_ids) - {r["id"] for r in self.runs})
        parts = [self.dash.label, f"comparing {len(self.runs)} runs"]
        if missing:
            parts.append("gone: " + ", ".join(map(str, missing)))
        self.status.set_info(" · ".join(parts))

    def action_open(self) -> None:
        k = self.query_one(CompareTable).current_key()
        if k is not None:
            self.dash.open_detail(int(k))

    def on_data_table_row_selected(self, event) -> None:  # noqa: ANN001 - enter on a row opens it
        if isinstance(event.data_table, CompareTable):
            event.stop()
            self.dash.open_detail(int(event.row_key.value))
