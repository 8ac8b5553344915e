"""Pure formatting of registry rows into dashboard cells (no Textual, no database).

Runs store fractions (0..1); reference numbers are percentages, so every comparison converts
explicitly with ``pct``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Optional, Sequence

from rich.text import Text

Clock = Callable[[], datetime]

# A running job (or worker) whose heartbeat is older than this is shown as stale / dead: the
# local worker's default heartbeat expiry (`ctxsim worker --heartbeat-expiry`, 60 s).
DEFAULT_STALE_AFTER_S = 60.0

STATUS_STYLE = {
    "queued": "cyan",
    "running": "bold green",
    "done": "blue",
    "failed": "bold red",
    "cancelled": "dim",
    "stale": "bold yellow",
}

# (key, header) of the runs table, in display order
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"), ("name", "Name"), ("dataset", "Dataset"), ("loss", "Loss"), ("res", "Res"),
    ("status", "Status"), ("progress", "Epoch"), ("last_loss", "Last loss"), ("best", "Best R@1"),
    ("delta", "Δ paper"), ("gpu", "Host:GPU"), ("elapsed", "Elapsed"),
)


def pct(fraction: Optional[float]) -> Optional[float]:
    """A run's fraction (0..1) as the percentage the reference numbers use."""
    return None if fraction is None else 100.0 * fraction


def fmt_duration(seconds: Optional[float]) -> str:
    """Compact elapsed time: 45s, 3m05s, 2h07m, 3d04h."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def fmt_float(v: Optional[float], digits: int = 4) -> str:
    if v is None:
        return ""
    if v != v:  # NaN
        return "nan"
    return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"


def fmt_delta(delta: Optional[float]) -> Text:
    """A signed difference in percentage points, green when above the paper, red when below."""
    if delta is None:
        return Text("–", style="dim")
    style = "green" if delta >= 0 else "red"
    return Text(f"{delta:+.1f}", style=style)


def is_stale(job: dict[str, Any], now: datetime, stale_after_s: float) -> bool:
    """True when a running job's heartbeat is missing or older than ``stale_after_s``."""
    if job.get("status") != "running":
        return False
    hb = job.get("heartbeat_at") or job.get("started_at")
    return hb is None or (now - hb).total_seconds() > stale_after_s


def elapsed_s(job: dict[str, Any], now: datetime) -> Optional[float]:
    start = job.get("started_at")
    if start is None:
        return None
    end = job.get("finished_at") or (now if job.get("status") == "running" else None)
    if end is None:
        return None
    return (end - start).total_seconds()


@dataclass
class RunRow:
    """One runs-table row: display cells, sort values, and the text searched by the filter."""

    id: int
    status: str
    dataset: str
    loss: str
    cells: dict[str, Any] = field(default_factory=dict)
    sort: dict[str, Any] = field(default_factory=dict)
    search: str = ""
    stale: bool = False


def paper_key(job: dict[str, Any], metric: str = "R@1") -> tuple:
    return (job["dataset"], job["loss"], job.get("resolution"), metric)


def where_running(job: dict[str, Any]) -> str:
    """Where a job runs or ran: ``host:gpus`` (``host`` for a CPU job, ``:gpus`` if no host yet)."""
    host, gpus = job.get("worker_host") or "", job.get("gpus") or ""
    return f"{host}:{gpus}" if gpus else host


def run_row(job: dict[str, Any], paper: dict[tuple, dict[str, Any]], now: datetime,
            stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunRow:
    """Formats a ``queries.runs_table`` dict into a RunRow (paper: ``queries.paper_numbers``)."""
    summ = job.get("summaries") or {}
    stale = is_stale(job, now, stale_after_s)
    status = job["status"]
    shown_status = "stale" if stale else status
    r1 = summ.get("R@1")
    best = pct(r1["best"]) if r1 else None
    ref = paper.get(paper_key(job))
    delta = best - ref["value"] if (best is not None and ref is not None) else None
    loss_s = summ.get("train/loss")
    last_loss = loss_s["last"] if loss_s else None
    el = elapsed_s(job, now)
    total = job.get("total_epochs")
    epoch = job.get("epoch") or 0
    progress = f"{epoch}/{total}" if total else (str(epoch) if epoch else "")
    name = job.get("name") or ""
    cells = {
        "id": str(job["id"]),
        "name": name,
        "dataset": job["dataset"],
        "loss": job["loss"],
        "res": str(job["resolution"]) if job.get("resolution") else "",
        "status": Text("running?" if stale else status, style=STATUS_STYLE.get(shown_status, "")),
        "progress": progress,
        "last_loss": fmt_float(last_loss),
        "best": f"{best:.1f} @{r1['best_step']}" if best is not None else "",
        "delta": fmt_delta(delta),
        "gpu": where_running(job),
        "elapsed": fmt_duration(el),
    }
    none_last = float("-inf")
    sort = {
        "id": job["id"], "name": name.lower(), "dataset": job["dataset"], "loss": job["loss"],
        "res": job.get("resolution") or 0, "status": shown_status,
        "progress": (epoch / total) if total else 0.0,
        "last_loss": last_loss if last_loss is not None else none_last,
        "best": best if best is not None else none_last,
        "delta": delta if delta is not None else none_last,
        "gpu": where_running(job), "elapsed": el or 0.0,
    }
    search = " ".join([str(job["id"]), name, job["dataset"], job["loss"], str(job.get("resolution") or ""),
                       status, " ".join(job.get("tags") or [])]).lower()
    return RunRow(job["id"], status, job["dataset"], job["loss"], cells, sort, search, stale)


@dataclass
class RunFilter:
    """What the runs table shows: exact status/dataset/loss (None = any) and a free-text search."""

    status: Optional[str] = None
    dataset: Optional[str] = None
    loss: Optional[str] = None
    text: str = ""

    def accepts(self, row: RunRow) -> bool:
        if self.status and (("stale" if row.stale else row.status) != self.status
                            and not (self.status == "running" and row.stale)):
            return False
        if self.dataset and row.dataset != self.dataset:
            return False
        if self.loss and row.loss != self.loss:
            return False
        words = self.text.lower().split()
        return all(w in row.search for w in words)


def order_rows(rows: Iterable[RunRow], flt: RunFilter, sort_key: str = "id",
               reverse: bool = True) -> list[RunRow]:
    """The rows the table shows, filtered and sorted (ties broken by id, newest first)."""
    kept = [r for r in rows if flt.accepts(r)]
    kept.sort(key=lambda r: r.id, reverse=True)
    kept.sort(key=lambda r: r.sort[sort_key], reverse=reverse)
    return kept


def decimate(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """At most ``max_points`` evenly spaced points (always keeping the first and the last)."""
    n = len(points)
    if n <= max_points or max_points < 2:
        return list(points)
    stride = (n - 1) / (max_points - 1)
    return [points[round(i * stride)] for i in range(max_points)]


def series_groups(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """Splits a run's metric keys into loss series (plotted against step) and retrieval series
    (R@K, MAP@R, RP: plotted against epoch)."""
    loss, retrieval = [], []
    for k in sorted(keys):
        if k in ("train/lr", "train/images_per_s"):
            continue
        if k.startswith("train/") or k == "epoch/loss":
            loss.append(k)
        elif k.startswith("R@") or k in ("MAP@R", "RP"):
            retrieval.append(k)
    retrieval.sort(key=lambda k: (not k.startswith("R@"), int(k[2:]) if k[2:].isdigit() else 0, k))
    loss.sort(key=lambda k: (k != "train/loss", k == "epoch/loss", k))
    return loss, retrieval
