"""Selected runs side by side with the paper's numbers (provenance shown), deltas, curves overlaid."""

from __future__ import annotations

from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Header

from ctxsim.registry import queries
from ctxsim.report.comparability import comparability
from ctxsim.tui.data import SeriesCache
from ctxsim.tui.format import paper_key, pct
from ctxsim.tui.messages import CompareLoaded, RegistryStatus
from ctxsim.tui.screens.base import DashScreen
from ctxsim.tui.widgets.compare_table import CompareTable
from ctxsim.tui.widgets.curve_plot import CurvePlot
from ctxsim.tui.widgets.key_bar import KeyBar
from ctxsim.tui.widgets.status_line import StatusLine

COMPARE_KEYS = ("R@1", "epoch/loss")


def fraction_axis(pts: list[tuple[float, float]], total: Optional[float]) -> list[tuple[float, float]]:
    """Points with x as the percentage of training done (epoch / total epochs)."""
    if not total:
        total = max((p[0] for p in pts), default=0) or 1
    return [(100.0 * x / total, y) for x, y in pts]


class CompareScreen(DashScreen):
    VIEW_NAME = "Compare"
    HELP = ("The marked runs side by side with the paper's number and its provenance. The plots put "
            "runs of different lengths on one axis by the fraction of training done (a: by epoch); "
            "the paper's numbers are horizontal lines, its curves dashed.")
    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back"),
                Binding("enter", "open", "Detail", key_display="⏎"),
                Binding("a", "axis", "x axis: % of training / epoch"),
                Binding("t", "paper_table", "Paper table (224/256)", show=False)]

    def __init__(self, job_ids: list[int], **kw) -> None:
        super().__init__(**kw)
        self.job_ids = list(job_ids)
        self.caches = {j: SeriesCache(j) for j in self.job_ids}
        self.runs: list[dict] = []
        self.by_fraction = True
        self._last: Optional[CompareLoaded] = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield CompareTable(id="compare")
        with Horizontal(id="compare-plots"):
            yield CurvePlot("R@1 %", xlabel="% of training", percent=True, id="cmp-r1")
            yield CurvePlot("epoch loss", xlabel="% of training", log_y=None, id="cmp-loss")
        yield StatusLine()
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(CompareTable).focus()
        self.poll()

    def load(self) -> None:
        reg = self.dash.read_reg
        runs = queries.runs_table(reg, ids=self.job_ids, summary_keys=("R@1", "MAP@R", "epoch/loss"))
        runs.sort(key=lambda r: self.job_ids.index(r["id"]))
        paper = self.dash.reference.numbers(reg)
        comparable = comparability(reg, [r["id"] for r in runs])
        curves: dict[tuple, list] = {}
        series = {}
        for r in runs:
            r["paper"] = paper.get(paper_key(r))
            r.update(comparable.get(r["id"], {}))  # "comparable", "deviations": greyed when not comparable
            key = (r["dataset"], r["loss"], r.get("resolution"))
            if key not in curves:
                curves[key] = self.dash.reference.curve(reg, *key)
            cache = self.caches[r["id"]]
            cache.update(reg, {k: v for k, v in r["summaries"].items() if k in COMPARE_KEYS})
            series[r["id"]] = {k: list(v) for k, v in cache.points.items()}
        self.post_message(CompareLoaded(runs, series, curves))

    def on_compare_loaded(self, msg: CompareLoaded) -> None:
        self.runs = msg.runs
        self._last = msg
        self.query_one(CompareTable).show(msg.runs)
        self._plot()

    def _plot(self) -> None:
        msg = self._last
        if msg is None:
            return
        total = {r["id"]: r.get("total_epochs") for r in msg.runs}

        def x(pts, t):
            return fraction_axis(pts, t) if self.by_fraction else list(pts)

        r1 = {f"#{j}": x([(s, pct(v)) for s, v in pts.get("R@1", [])], total.get(j)) for j, pts in msg.series.items()}
        loss = {f"#{j}": x(pts.get("epoch/loss", []), total.get(j)) for j, pts in msg.series.items()}
        ref = {f"paper {d}/{lo}/{res or '-'}": x(c, None) for (d, lo, res), c in msg.paper_curves.items() if c}
        lines = {}
        for r in msg.runs:
            if r.get("paper") and r["paper"].get("value") is not None:
                lines[f"paper {r['dataset']}/{r['loss']}"] = r["paper"]["value"]
        label = "% of training" if self.by_fraction else "epoch"
        for plot_id, data, refs in (("#cmp-r1", r1, ref), ("#cmp-loss", loss, {})):
            plot = self.query_one(plot_id, CurvePlot)
            plot.xlabel = label
            if plot_id == "#cmp-r1":
                plot.set_series(data, refs, lines)
            else:
                plot.set_series(data, refs)

    def action_axis(self) -> None:
        self.by_fraction = not self.by_fraction
        for plot in self.query(CurvePlot):
            plot._signature = None  # the same data on another axis: draw again
        self._plot()
        self.status.set_notice("x axis: % of training" if self.by_fraction else "x axis: epoch")

    def after_load(self, msg: RegistryStatus) -> None:
        missing = sorted(set(self.job_ids) - {r["id"] for r in self.runs})
        parts = [self.dash.label, f"comparing {len(self.runs)} runs"]
        if missing:
            parts.append("gone: " + ", ".join(map(str, missing)))
        self.status.set_info(" · ".join(parts))

    def action_paper_table(self) -> None:
        """t: the paper's table of the run under the cursor's resolution (224 when it has none)."""
        k = self.query_one(CompareTable).current_key()
        res = next((r.get("resolution") for r in self.runs if str(r["id"]) == k), None)
        self.dash.open_paper_table(res if res in (224, 256) else 224)

    def action_open(self) -> None:
        k = self.query_one(CompareTable).current_key()
        if k is not None:
            self.dash.open_detail(int(k))

    def on_data_table_row_selected(self, event) -> None:  # - enter on a row opens it
        if isinstance(event.data_table, CompareTable):
            event.stop()
            self.dash.open_detail(int(event.row_key.value))
