"""Two lines on top of the run detail: what the run is and where it stands."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from rich.text import Text
from textual.widgets import Static

from ctxsim.tui.format import STATUS_STYLE, elapsed_s, fmt_delta, fmt_duration, fmt_float, pct


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader { height: auto; padding: 0 1; background: $boost; }
    """

    def show(self, d: Optional[dict[str, Any]], paper: Optional[dict[str, Any]], now: datetime,
             points: int, stale: bool) -> None:
        if d is None:
            self.update("this job no longer exists")
            return
        t = Text()
        t.append(f"#{d['id']} ", style="bold")
        if d.get("name"):
            t.append(f"{d['name']}  ")
        t.append(f"{d['dataset']} · {d['loss']}" + (f" · {d['resolution']}" if d.get("resolution") else ""))
        t.append("  ")
        status = "running?" if stale else d["status"]
        t.append(status, style=STATUS_STYLE["stale" if stale else d["status"]])
        total = d.get("total_epochs")
        t.append(f"  epoch {d.get('epoch') or 0}" + (f"/{total}" if total else ""))
        el = elapsed_s(d, now)
        if el is not None:
            t.append(f"  {fmt_duration(el)}")
        if d.get("gpus"):
            t.append(f"  GPU {d['gpus']}")
        if d.get("worker_id"):
            t.append(f"  on {d['worker_id']}", style="dim")
        t.append("\n")
        summ = d.get("summaries") or {}
        if "train/loss" in summ:
            t.append(f"loss {fmt_float(summ['train/loss']['last'])} @step {summ['train/loss']['last_step']}  ")
        r1 = summ.get("R@1")
        if r1:
            best = pct(r1["best"])
            t.append(f"best R@1 {best:.1f} @epoch {r1['best_step']}  last {pct(r1['last']):.1f}  ")
            if paper:
                t.append(f"paper {paper['value']:.1f} ({paper['kind']}) Δ ")
                t.append_text(fmt_delta(best - paper["value"]))
                t.append("  ")
        if "MAP@R" in summ:
            t.append(f"MAP@R {pct(summ['MAP@R']['last']):.1f}  ")
        t.append(f"{points} points", style="dim")
        if d.get("error"):
            t.append("\n" + d["error"].splitlines()[0], style="red")
        self.update(t)
