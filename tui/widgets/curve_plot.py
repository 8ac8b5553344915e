"""A live line plot (plotext) of named series, with optional reference curves drawn dashed."""

from __future__ import annotations

from typing import Optional, Sequence

from textual_plotext import PlotextPlot

from ctxsim.tui.format import decimate

Series = Sequence[tuple[float, float]]


class CurvePlot(PlotextPlot):
    """``set_series({...}, reference={...})`` replaces what is drawn; redraws only on change.

    Long series are decimated to about two points per plot column before drawing.
    """

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, title: str, xlabel: str = "", ylabel: str = "", **kw) -> None:
        super().__init__(**kw)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self.series: dict[str, Series] = {}
        self.reference: dict[str, Series] = {}
        self._signature: Optional[tuple] = None
        self.draws = 0

    def set_series(self, series: dict[str, Series], reference: Optional[dict[str, Series]] = None) -> bool:
        """Replaces the plotted data; returns True when anything changed (and a redraw is queued)."""
        reference = reference or {}
        sig = (tuple((k, len(v), tuple(v[-1]) if v else None) for k, v in series.items()),
               tuple((k, len(v)) for k, v in reference.items()))
        if sig == self._signature:
            return False
        self._signature = sig
        self.series = {k: list(v) for k, v in series.items()}
        self.reference = {k: list(v) for k, v in reference.items()}
        self.refresh()
        return True

    def render(self):
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        if self.xlabel:
            plt.xlabel(self.xlabel)
        if self.ylabel:
            plt.ylabel(self.ylabel)
        budget = max(16, 2 * max(1, self.size.width))
        drawn = False
        for name, pts in self.series.items():
            if pts:
                pts = decimate(pts, budget)
                plt.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="braille")
                drawn = True
        for name, pts in self.reference.items():
            if pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="dot")
                drawn = True
        if not drawn:
            plt.text("no points yet", x=0.5, y=0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
        self.draws += 1
        return super().render()
