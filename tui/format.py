"""Pure formatting of registry rows into dashboard cells (no Textual, no database).

Runs store fractions (0..1); reference numbers are percentages, so every comparison converts
explicitly with ``pct``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Optional, Sequence

from rich.cells import cell_len
from rich.text import Text

from ctxsim.registry.states import JOB_STATUS_STYLE, JobStatus

Clock = Callable[[], datetime]

# A running job (or worker) whose heartbeat is older than this is shown as stale / dead: the
# local worker's default heartbeat expiry (`ctxsim worker --heartbeat-expiry`, 60 s).
DEFAULT_STALE_AFTER_S = 60.0

STATUS_STYLE = JOB_STATUS_STYLE

# lifecycle order of the status column's sort: what needs attention first
STATUS_ORDER = {JobStatus.RUNNING: 0, "stale": 1, JobStatus.QUEUED: 2, JobStatus.FAILED: 3, JobStatus.DONE: 4, JobStatus.CANCELLED: 5}

# (key, header) of the runs table, in order of importance: the ID column stays fixed on the left,
# the KEY_COLUMNS are always shown, the rest appear as the terminal's width allows
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"), ("status", "Status"), ("progress", "Epoch"), ("best", "Best R@1"), ("eta", "ETA"),
    ("run", "Dataset/loss/res"), ("delta", "Δ paper"), ("name", "Name"), ("seed", "Seed"), ("speed", "img/s"),
    ("last_loss", "Last loss"), ("elapsed", "Elapsed"), ("gpu", "Host:GPU"), ("overrides", "Overrides"),
)
# always shown, in this order: what a run is (dataset/loss/res) beats its name and Δ paper at 80×24
KEY_COLUMNS = ("id", "status", "progress", "best", "eta", "run")
RUN_CELL_MAX = 26  # the dataset/loss/res cell: a longer one ends in … (the detail header has it whole)
OPTIONAL_COLUMNS = ("overrides",)  # shown only on demand (a key toggles them)


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
    if job.get("status") != JobStatus.RUNNING:
        return False
    hb = job.get("heartbeat_at") or job.get("started_at")
    return hb is None or (now - hb).total_seconds() > stale_after_s


def elapsed_s(job: dict[str, Any], now: datetime) -> Optional[float]:
    """Time spent running, summed over all attempts: ``prior_elapsed_s`` (earlier attempts, from
    the job's history) plus the current or last attempt."""
    prior = job.get("prior_elapsed_s") or 0.0
    start = job.get("started_at")
    end = job.get("finished_at") or (now if job.get("status") == JobStatus.RUNNING else None)
    if start is None or end is None or (job.get("finished_at") and job["finished_at"] < start):
        return prior or None
    return prior + max(0.0, (end - start).total_seconds())


def eta_s(job: dict[str, Any], now: datetime) -> Optional[float]:
    """Seconds left for a running job, from this attempt's pace (epochs done since it started)."""
    if job.get("status") != JobStatus.RUNNING:
        return None
    total, epoch, start = job.get("total_epochs"), job.get("epoch") or 0, job.get("started_at")
    first = job.get("attempt_start_epoch") or 0  # a resumed attempt starts past epoch 0
    done = epoch - first
    if not total or start is None or done <= 0:
        return None
    spent = (now - start).total_seconds()
    return max(0.0, spent / done * (total - epoch))


def flat_config(cfg: Any, prefix: str = "") -> list[str]:
    """A config as ``key=value`` words (nested keys dotted: ``sampler.num_batches=30``), for search."""
    if isinstance(cfg, dict):
        out: list[str] = []
        for k in sorted(cfg):
            out += flat_config(cfg[k], f"{prefix}{k}.")
        return out
    if isinstance(cfg, (list, tuple)):
        return [f"{prefix[:-1]}={','.join(map(str, cfg))}"]
    return [f"{prefix[:-1]}={cfg}"]


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, value in a, value in b) for every flattened key whose values differ (``–`` if absent)."""
    fa = dict(w.split("=", 1) for w in flat_config(a))
    fb = dict(w.split("=", 1) for w in flat_config(b))
    return [(k, fa.get(k, "–"), fb.get(k, "–")) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def run_command(job: dict[str, Any]) -> str:
    """The ``ctxsim run …`` command that queues this job's config again (its overrides as --set)."""
    import shlex

    words = ["ctxsim", "run", "-d", job["dataset"], "-l", job["loss"]]
    if job.get("resolution"):
        words += ["-r", str(job["resolution"])]
    for o in job.get("overrides") or []:
        words += ["--set", o]
    if job.get("seed") is not None:
        words += ["--seed", str(job["seed"])]
    if job.get("name"):
        words += ["--name", job["name"]]
    words.append("--detach")
    return " ".join(shlex.quote(w) for w in words)


# config keys that are not "overrides" of a recipe (they name or place the run)
NOT_OVERRIDES = ("name", "tags", "device", "root", "run_dir", "seed")


def overrides_of(config: dict[str, Any], recipe_config: dict[str, Any]) -> list[str]:
    """A job's config as ``key=value`` overrides of its recipe's (``--set`` words), naming keys left out."""
    if not recipe_config:
        return []
    return [f"{k}={b}" for k, _a, b in config_diff(recipe_config, config or {})
            if b != "–" and k.split(".")[0] not in NOT_OVERRIDES]


def fit_columns(widths: dict[str, int], available: int, keys: Sequence[str] = KEY_COLUMNS,
                order: Sequence[str] = (), padding: int = 2) -> list[str]:
    """The columns shown in ``available`` cells: all of ``keys``, then the others of ``order`` (in
    that order) while they fit; each column takes its width plus ``padding``."""
    shown = [k for k in order if k in keys]
    used = sum(widths.get(k, 0) + padding for k in shown)
    for k in order:
        if k in keys:
            continue
        w = widths.get(k, 0) + padding
        if used + w > available:
            break
        shown.append(k)
        used += w
    return [k for k in order if k in shown]


def cell_width(value: Any) -> int:
    return cell_len(value.plain if isinstance(value, Text) else str(value))


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


def run_cell(dataset: str, loss: str, resolution: Optional[int], width: int = RUN_CELL_MAX) -> str:
    """``cub/hybrid/256``; past ``width`` cells the loss is shortened with … (never the dataset or
    the resolution, which tell runs of one loss apart)."""
    res = f"/{resolution}" if resolution else ""
    text = f"{dataset}/{loss}{res}"
    over = cell_len(text) - width
    if over <= 0:
        return text
    keep = max(1, len(loss) - over - 1)
    return f"{dataset}/{loss[:keep]}…{res}"


def run_row(job: dict[str, Any], paper: dict[tuple, dict[str, Any]], now: datetime,
            stale_after_s: float = DEFAULT_STALE_AFTER_S) -> RunRow:
    """Formats a ``queries.runs_table`` dict into a RunRow (paper: ``ctxsim.report.compare.paper_numbers``).

    Optional keys the dashboard adds: ``prior_elapsed_s`` (earlier attempts), ``config`` (the
    parsed config, searched as ``key=value``) and ``overrides`` (its difference from the recipe).
    """
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
    speed_s = summ.get("train/images_per_s")
    speed = speed_s["last"] if speed_s and status == JobStatus.RUNNING else None
    el = elapsed_s(job, now)
    eta = None if stale else eta_s(job, now)
    total = job.get("total_epochs")
    epoch = job.get("epoch") or 0
    progress = f"{epoch}/{total}" if total else (str(epoch) if epoch else "")
    name = job.get("name") or ""
    seed = job.get("seed")
    overrides = " ".join(job.get("overrides") or [])
    cells = {
        "id": str(job["id"]),
        "run": run_cell(job["dataset"], job["loss"], job.get("resolution")),
        "name": name,
        "dataset": job["dataset"],
        "loss": job["loss"],
        "res": str(job["resolution"]) if job.get("resolution") else "",
        "seed": "" if seed is None else str(seed),
        "status": Text("running?" if stale else status, style=STATUS_STYLE.get(shown_status, "")),
        "progress": progress,
        "eta": Text("?", style="yellow") if stale else fmt_duration(eta),
        "speed": f"{speed:.0f}" if speed is not None else "",
        "last_loss": fmt_float(last_loss),
        "best": f"{best:.1f} @{r1['best_step']}" if best is not None else "",
        "delta": fmt_delta(delta),
        "gpu": where_running(job),
        "elapsed": fmt_duration(el),
        "overrides": overrides,
    }
    none_last = float("-inf")
    sort = {
        "id": job["id"], "name": name.lower(), "dataset": job["dataset"], "loss": job["loss"],
        "run": (job["dataset"], job["loss"], job.get("resolution") or 0),
        "res": job.get("resolution") or 0, "seed": seed if seed is not None else -1,
        "status": STATUS_ORDER.get(shown_status, 9),
        "progress": (epoch / total) if total else 0.0,
        "eta": eta if eta is not None else float("inf"),
        "speed": speed if speed is not None else none_last,
        "last_loss": last_loss if last_loss is not None else none_last,
        "best": best if best is not None else none_last,
        "delta": delta if delta is not None else none_last,
        "gpu": where_running(job), "elapsed": el or 0.0, "overrides": overrides,
    }
    words = [str(job["id"]), name, job["dataset"], job["loss"], str(job.get("resolution") or ""),
             status, f"seed={seed}" if seed is not None else "", " ".join(job.get("tags") or []),
             " ".join(flat_config(job["config"])) if isinstance(job.get("config"), dict) else ""]
    search = " ".join(w for w in words if w).lower()
    return RunRow(job["id"], status, job["dataset"], job["loss"], cells, sort, search, stale)


def metric_drop(job: dict[str, Any], key: str = "R@1", points: float = 10.0) -> Optional[tuple[float, float]]:
    """(best %, last %) when a running job's ``key`` fell more than ``points`` below its best."""
    s = (job.get("summaries") or {}).get(key)
    if job.get("status") != JobStatus.RUNNING or not s or s.get("best") is None or s.get("last") is None:
        return None
    best, last = pct(s["best"]), pct(s["last"])
    return (best, last) if best - last > points else None


@dataclass
class RunFilter:
    """What the runs table shows: exact status/dataset/loss (None = any) and a free-text search."""

    status: Optional[str] = None
    dataset: Optional[str] = None
    loss: Optional[str] = None
    text: str = ""

    def accepts(self, row: RunRow) -> bool:
        if self.status and (("stale" if row.stale else row.status) != self.status
                            and not (self.status == JobStatus.RUNNING and row.stale)):
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


def worker_state(w: dict[str, Any], now: datetime, stale_after_s: float) -> str:
    """alive | dead (heartbeat older than ``stale_after_s``) | stopped."""
    if w.get("status") == "stopped":
        return "stopped"
    hb = w.get("heartbeat_at")
    if hb is None or (now - hb).total_seconds() > stale_after_s:
        return "dead"
    return "alive"
