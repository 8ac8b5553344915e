"""One line on top of the run detail: what the run is (dataset/loss/res, seed, name) and where it
stands (most important first, cut with an ellipsis on a narrow terminal, never wrapped)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from rich.text import Text
from textual.widgets import Static

from ctxsim.registry.states import JobStatus
from ctxsim.tui.format import STATUS_STYLE, elapsed_s, eta_s, fmt_delta, fmt_duration, fmt_float, pct


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader { height: 1; padding: 0 1; background: $boost; }
    """

    def show(self, d: Optional[dict[str, Any]], paper: Optional[dict[str, Any]], now: datetime,
             points: int, stale: bool) -> None:
        if d is None:
            self.update("this job no longer exists")
            return
        t = Text(no_wrap=True, overflow="ellipsis")
        sep = " · "
        t.append(f"#{d['id']} ", style="bold")
        # what the run is comes first: it must survive an 80-column cut
        t.append(f"{d['dataset']}/{d['loss']}" + (f"/{d['resolution']}" if d.get("resolution") else ""), style="bold")
        if d.get("seed") is not None:
            t.append(f" seed {d['seed']}")
        t.append(" ")
        if d.get("name"):
            t.append(f"{d['name']} ", style="italic")
        status = "running?" if stale else d["status"]
        t.append(status, style=STATUS_STYLE.get("stale" if stale else d["status"], ""))
        total = d.get("total_epochs")
        t.append(f" {d.get('epoch') or 0}" + (f"/{total}" if total else ""))
        eta = None if stale else eta_s(d, now)
        if eta is not None:
            t.append(f" ETA {fmt_duration(eta)}", style="bold")
        if d.get("error") and d["status"] in (JobStatus.FAILED, JobStatus.CANCELLED):
            t.append(sep)
            t.append(d["error"].splitlines()[0], style="red")
        summ = d.get("summaries") or {}
        r1 = summ.get("R@1")
        if r1:
            best = pct(r1["best"])
            t.append(f"{sep}R@1 {best:.1f}")
            if paper:
                t.append(" Δ ")
                t.append_text(fmt_delta(best - paper["value"]))
            untrained = (d.get("untrained") or {}).get("R@1")
            if untrained is not None:  # what the training added over the same trunk before its first step
                t.append(" Δ untrained ")
                t.append_text(fmt_delta(best - untrained))
        if d.get("skipped_images"):  # --skip-bad-images: the metrics were computed without them
            t.append(sep)
            t.append(f"{d['skipped_images']} images skipped", style="yellow")
        if "MAP@R" in summ:
            t.append(f"{sep}MAP@R {pct(summ['MAP@R']['last']):.1f}")
        if "train/loss" in summ:
            t.append(f"{sep}loss {fmt_float(summ['train/loss']['last'])}")
        ips = summ.get("train/images_per_s")
        if ips and d["status"] == JobStatus.RUNNING and ips.get("last") is not None:
            t.append(f"{sep}{ips['last']:.0f} img/s")
        el = elapsed_s(d, now)
        if el is not None:
            t.append(f"{sep}{fmt_duration(el)}")
        if d.get("gpus") or d.get("worker_id"):
            t.append(f"{sep}{d.get('worker_id') or ''}" + (f" GPU {d['gpus']}" if d.get("gpus") else ""), style="dim")
        t.append(f"{sep}{points} points", style="dim")
        self.update(t)
