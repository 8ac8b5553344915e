"""A live line plot (plotext) of named series, readable without colour.

- the first line names the metric and then the legend, above the plot area (never over the data):
  each entry whole and in its series' colour; entries that do not fit are counted (``+2``);
- each series has its own marker and colour, reference curves are drawn dashed and reference
  numbers (the paper's R@1) as horizontal lines;
- a loss axis is logarithmic when its values span decades (``log_y=None``), or as chosen;
- integer x axes (epochs, steps) get integer ticks and always keep the last label;
- percent axes (``percent=True``) stay within 0-100.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from rich.text import Text
from textual_plotext import PlotextPlot

from ctxsim.tui.format import decimate

Series = Sequence[tuple[float, float]]

MARKERS = ("braille", "•", "x", "+", "o", "*", "#", "@", "%", "&")
# (plotext colour, rich style) per series, in order; references and lines are grey
PALETTE = (("cyan", "cyan"), ("orange", "dark_orange"), ("green", "green"), ("magenta", "magenta"),
           ("blue+", "bright_blue"), ("red", "red"), ("yellow", "yellow"), ("white", "white"))
REFERENCE_COLOR = ("gray", "grey62")
MARKER_GLYPH = {"braille": "⠤"}
LOG_SPAN = 10 ** 1.5  # max/min above this: the auto axis is logarithmic
TICK_SPACING = 10  # columns per x tick, about


def marker_glyph(marker: str) -> str:
    return MARKER_GLYPH.get(marker, marker)


def nice_step(span: float, n: int) -> int:
    """An integer tick step (1, 2, 5 × 10^k) giving about ``n`` ticks over ``span``."""
    if span <= 0 or n <= 0:
        return 1
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return max(1, int(m * mag))
    return max(1, int(10 * mag))


def integer_ticks(lo: float, hi: float, width: int) -> list[int]:
    """Integer ticks from ``lo`` to ``hi`` for a plot ``width`` columns wide; the last value ``hi``
    (rounded) is always a tick, a regular tick too close to it gives way."""
    lo_i, hi_i = int(math.floor(lo)), int(math.ceil(hi))
    if hi_i <= lo_i:
        return [lo_i]
    n = max(2, width // TICK_SPACING)
    step = nice_step(hi_i - lo_i, n)
    first = int(math.ceil(lo_i / step) * step)
    ticks = list(range(first, hi_i + 1, step))
    if ticks and ticks[-1] != hi_i:
        if hi_i - ticks[-1] < step / 2 and len(ticks) > 1:
            ticks[-1] = hi_i
        else:
            ticks.append(hi_i)
    return ticks or [lo_i, hi_i]


def wants_log(series: dict[str, Series]) -> bool:
    """True when the positive values span more than LOG_SPAN (decades)."""
    vals = [v for pts in series.values() for _x, v in pts if v is not None and v > 0 and v == v]
    return bool(vals) and max(vals) / min(vals) > LOG_SPAN


def dashes(pts: Series, n: int) -> list[list[tuple[float, float]]]:
    """A polyline cut into ``n`` visible dashes with gaps between them (linear interpolation)."""
    pts = sorted(pts)
    if len(pts) < 2:
        return [list(pts)] if pts else []
    x0, x1 = pts[0][0], pts[-1][0]
    if x1 <= x0:
        return [list(pts)]

    def at(x: float) -> float:
        for (a, ya), (b, yb) in zip(pts, pts[1:]):
            if a <= x <= b:
                return ya if b == a else ya + (yb - ya) * (x - a) / (b - a)
        return pts[-1][1]

    edges = [x0 + (x1 - x0) * i / (2 * n - 1) for i in range(2 * n)]
    out = []
    for i in range(0, 2 * n, 2):
        a, b = edges[i], edges[i + 1]
        seg = [(a, at(a))] + [p for p in pts if a < p[0] < b] + [(b, at(b))]
        out.append(seg)
    return out


class CurvePlot(PlotextPlot):
    """``set_series({...}, reference={...}, hlines={...})`` replaces what is drawn; redraws only on change.

    Long series are decimated to about two points per plot column before drawing.
    """

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str, xlabel: str = "", ylabel: str = "", percent: bool = False,
                 integer_x: bool = True, log_y: Optional[bool] = False, **kw) -> None:
        super().__init__(**kw)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self.percent = percent
        self.integer_x = integer_x
        self.log_choice = log_y  # None: automatic
        self.series: dict[str, Series] = {}
        self.reference: dict[str, Series] = {}
        self.hlines: dict[str, float] = {}
        self._signature: Optional[tuple] = None
        self.draws = 0

    @property
    def log_y(self) -> bool:
        return wants_log(self.series) if self.log_choice is None else bool(self.log_choice)

    def set_log_y(self, on: Optional[bool]) -> None:
        self.log_choice = on
        self.refresh()

    def set_series(self, series: dict[str, Series], reference: Optional[dict[str, Series]] = None,
                   hlines: Optional[dict[str, float]] = None) -> bool:
        """Replaces the plotted data; returns True when anything changed (and a redraw is queued)."""
        reference = reference or {}
        hlines = hlines or {}
        sig = (tuple((k, len(v), tuple(v[-1]) if v else None) for k, v in series.items()),
               tuple((k, len(v)) for k, v in reference.items()), tuple(sorted(hlines.items())))
        if sig == self._signature:
            return False
        self._signature = sig
        self.series = {k: list(v) for k, v in series.items()}
        self.reference = {k: list(v) for k, v in reference.items()}
        self.hlines = dict(hlines)
        self.refresh()
        return True

    def legend(self) -> str:
        """The legend as plain text: each series' marker and name, then the dashed references and lines."""
        return "  ".join(text for text, _style in self.legend_entries())

    def legend_entries(self) -> list[tuple[str, str]]:
        """(text, rich style) of each legend entry: series, then dashed references and lines."""
        out = [(f"{marker_glyph(MARKERS[i % len(MARKERS)])} {name}", PALETTE[i % len(PALETTE)][1])
               for i, (name, pts) in enumerate(self.series.items()) if pts]
        out += [(f"╌ {name}", REFERENCE_COLOR[1]) for name, pts in self.reference.items() if pts]
        out += [(f"─ {name} {v:.1f}", REFERENCE_COLOR[1]) for name, v in self.hlines.items()]
        return out

    def title_text(self, width: int) -> Text:
        """The metric's name, then every legend entry that fits whole (coloured as its series), then
        ``+N`` for those that do not; only a title longer than the width is cut (with …)."""
        t = Text(self.title, style="bold", no_wrap=True, overflow="ellipsis")
        entries = self.legend_entries()
        for i, (text, style) in enumerate(entries):
            rest = len(entries) - i - 1
            more = f"  +{rest}" if rest else ""
            if t.cell_len + 2 + len(text) + len(more) > width:
                t.append(f"  +{len(entries) - i}", style="dim")
                break
            t.append("  ")
            t.append(text, style=style)
        if t.cell_len > width:
            t.truncate(max(1, width), overflow="ellipsis")
        return t

    def title_line(self, width: int) -> str:
        return self.title_text(width).plain

    def render(self):
        """Draws; a plot that cannot be drawn says why instead of stopping the dashboard."""
        try:
            return self._draw()
        except Exception as e:  # noqa: BLE001 - plotext edge cases must never end a session
            from rich.text import Text

            from ctxsim.errors import one_line

            return Text(f"cannot draw this plot: {one_line(e)}", style="dim")

    def _draw(self):
        if self._signature is None:  # nothing read yet: plotext's empty frame costs ~10 ms per chart
            return Text.assemble(self.title_text(max(1, self.size.width)), "\n", Text("reading…", style="dim"))
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if self.xlabel:
            plt.xlabel(self.xlabel)
        if self.ylabel:
            plt.ylabel(self.ylabel)
        width = max(1, self.size.width)
        budget = max(16, 2 * width)
        log = self.log_y
        xs: list[float] = []
        ys: list[float] = []
        for i, pts in enumerate(self.series.values()):
            if log:
                pts = [p for p in pts if p[1] is not None and p[1] > 0]
            if pts:
                pts = decimate(pts, budget)
                plt.plot([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i % len(MARKERS)],
                         color=PALETTE[i % len(PALETTE)][0])
                xs += [pts[0][0], pts[-1][0]]
                ys += [p[1] for p in pts]
        for pts in self.reference.values():
            if pts:
                for seg in dashes(pts, max(3, width // 8)):
                    plt.plot([p[0] for p in seg], [p[1] for p in seg], marker="braille", color=REFERENCE_COLOR[0])
                xs += [min(p[0] for p in pts), max(p[0] for p in pts)]
                ys += [p[1] for p in pts]
        for _name, v in self.hlines.items():
            plt.hline(v, color=REFERENCE_COLOR[0])
            ys.append(v)
        if not xs:
            plt.text("no points yet", x=0.5, y=0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        else:
            if log:
                plt.yscale("log")
            lo, hi = min(xs), max(xs)
            if self.integer_x:
                ticks = integer_ticks(lo, hi, width)
                plt.xticks(ticks, [str(t) for t in ticks])
                x_lo, x_hi = min(ticks[0], lo), max(ticks[-1], hi)
                if x_hi <= x_lo:  # one point: a zero-width axis would divide by zero
                    x_lo, x_hi = x_lo - 1, x_hi + 1
                plt.xlim(x_lo, x_hi)
            elif hi <= lo:
                plt.xlim(lo - 1, hi + 1)
            if self.percent and ys:
                y_lo, y_hi = min(ys), max(ys)
                pad = max(1.0, 0.05 * (y_hi - y_lo))  # and never a zero-height axis
                plt.ylim(max(0.0, y_lo - pad), min(100.0, y_hi + pad))
        self.draws += 1
        # the title line is drawn here, in colour; plotext gets the rows below it
        width, height = max(1, self.size.width), max(1, self.size.height - 1)
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        return Text.assemble(self.title_text(width), "\n", Text.from_ansi(plt.build()))
