"""What the dashboard reads, run inside thread workers: the runs list and metric series, both
incremental, and the checkpoint files. No Textual imports here (tests use it without an app). The read-only registry handle is
``ctxsim.registry.db.read_registry``; the log follower is ``ctxsim.runner.logs.LogFollower``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from ctxsim.baselines import paper as reference_numbers
from ctxsim.registry import history, queries
from ctxsim.registry.db import Registry, describe_db_error, redact
from ctxsim.registry.states import JobStatus
from ctxsim.tui.format import RunRow, metric_drop, overrides_of, run_row, worker_state

SUMMARY_KEYS = ("R@1", "MAP@R", "train/loss", "train/images_per_s")
DROP_POINTS = 10.0  # a running job whose R@1 falls this many points below its best raises a notice
PAPER_RELOAD_EVERY = 30  # polls between reloads of the (rarely changing) reference numbers
FULL_RELOAD_EVERY = 30  # every job is re-read (rolling, a slice per poll) within this many polls
UPDATED_AT_MARGIN = timedelta(seconds=5)  # writers' clocks may disagree a little


def problem_text(reg: Registry, exc: BaseException) -> str:
    """One status-line sentence for a failed read (locked, unreachable, read-only...)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "locked" in first.lower() or "busy" in first.lower():
        return f"registry is locked by another process ({first}); showing the last data, retrying"
    try:
        return describe_db_error(reg.url, exc) + "; showing the last data, retrying"
    except Exception:  # pragma: no cover - describe_db_error is best effort
        return f"registry {redact(reg.url)}: {first}; retrying"


@dataclass
class SeriesCache:
    """A job's metric series held by the dashboard, grown incrementally.

    Each poll reads the job's summaries (one small query) and then, only for the keys whose
    ``last_step`` moved past what is held, the points after the held step (``metric_series`` with
    ``since_step``). One query per changed key: train series are indexed by global step and eval
    series by epoch, so one shared lower bound would drop points.
    """

    job_id: int
    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def held(self, key: str) -> int:
        pts = self.points.get(key)
        return pts[-1][0] if pts else -1

    def update(self, reg: Registry, summaries: dict[str, dict[str, Any]]) -> int:
        """Fetches the new points; returns how many arrived."""
        n = 0
        if not summaries:  # a writer that keeps no summaries: filter one query by held steps
            new = queries.metric_series(reg, self.job_id)
            for k, pts in new.items():
                fresh = [p for p in pts if p[0] > self.held(k)]
                self.points.setdefault(k, []).extend(fresh)
                n += len(fresh)
            return n
        for key, summ in summaries.items():
            if summ.get("last_step") is not None and summ["last_step"] <= self.held(key) \
                    and key in self.points:
                continue
            new = queries.metric_series(reg, self.job_id, keys=[key], since_step={key: self.held(key)})
            for k, pts in new.items():
                if pts:
                    self.points.setdefault(k, []).extend(pts)
                    n += len(pts)
            self.points.setdefault(key, [])
        return n


@dataclass
class RunsUpdate:
    """One poll of the runs list: every row, which ids were re-formatted (None: all), sharp R@1
    falls of running jobs, and the facts of the status line."""

    rows: list[RunRow]
    changed: Optional[set[int]]
    drops: dict[int, tuple[float, float]]
    warnings: list[str]
    counts: dict[str, int]
    workers_alive: int


class ReferenceCache:
    """The paper's numbers and learning curves, shared by the screens' reads. They change only when
    reference numbers are loaded (``invalidate()``), so opening a run or a comparison does not
    re-read the baselines table; entries older than ``max_age_s`` are read again all the same.
    Used from thread workers: each value is replaced whole, never mutated."""

    def __init__(self, max_age_s: float = 300.0, clock=time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._numbers: Optional[tuple[float, dict]] = None
        self._curves: dict[tuple, tuple[float, list]] = {}

    def _fresh(self, at: float) -> bool:
        return self.clock() - at < self.max_age_s

    def numbers(self, reg: Registry) -> dict:
        """``ctxsim.baselines.paper.paper_numbers``, cached."""
        held = self._numbers
        if held is None or not self._fresh(held[0]):
            held = (self.clock(), reference_numbers.paper_numbers(reg))
            self._numbers = held
        return held[1]

    def curve(self, reg: Registry, dataset: str, loss: str, resolution: Optional[int]) -> list[tuple[int, float]]:
        """``ctxsim.baselines.paper.paper_curve`` (R@1 by epoch), cached per dataset/loss/resolution."""
        key = (dataset, loss, resolution)
        held = self._curves.get(key)
        if held is None or not self._fresh(held[0]):
            held = (self.clock(), reference_numbers.paper_curve(reg, dataset, loss, resolution))
            self._curves = {**self._curves, key: held}
        return held[1]

    def invalidate(self) -> None:
        self._numbers, self._curves = None, {}


class RunsCache:
    """The runs screen's jobs, re-read incrementally (one instance per screen, used by one thread).

    Only jobs whose row changed (``jobs.updated_at``) or that got new metric points (``metrics.id``)
    are re-read, plus new ones; running jobs are re-formatted for the clock. What a marker could
    miss (a writer's clock far behind) is caught by a rolling re-read: each poll also re-reads every
    ``full_reload_every``-th job, so every job is re-read within that many polls at a small, even
    cost (a full re-read at once made every 30th poll about 10x slower)."""

    def __init__(self) -> None:
        self.paper: dict = {}
        self.paper_loaded = False
        self.polls = 0
        self.jobs: dict[int, dict] = {}
        self.rows: dict[int, RunRow] = {}
        self.counts: dict[str, int] = {}
        self.workers_alive = 0
        self._updated_at: Optional[datetime] = None
        self._metric_id: Optional[int] = None
        self._configs: dict[int, dict] = {}
        self._overrides: dict[int, list[str]] = {}
        self._recipes: dict[tuple, dict] = {}

    def refresh(self, reg: Registry, now: datetime, stale_after_s: float, reload_paper: bool = False,
                full_reload_every: int = FULL_RELOAD_EVERY,
                paper_reload_every: int = PAPER_RELOAD_EVERY) -> RunsUpdate:
        """Reads what changed since the last call and returns the rows to show."""
        reload_paper = reload_paper or not self.paper_loaded or self.polls % paper_reload_every == 0
        if reload_paper:
            paper = reference_numbers.paper_numbers(reg)
            reload_paper = paper != self.paper or not self.paper_loaded  # re-format only on a change
            self.paper, self.paper_loaded = paper, True
        full = not self.jobs
        turn = self.polls % full_reload_every
        self.polls += 1
        if full:
            ch = queries.runs_changes(reg)
            self.jobs = {j["id"]: j for j in queries.runs_table(reg, summary_keys=SUMMARY_KEYS)}
            fetched = set(self.jobs)
            for gone in set(self.rows) - fetched:
                del self.rows[gone]
        else:
            since = self._updated_at - UPDATED_AT_MARGIN if self._updated_at is not None else None
            ch = queries.runs_changes(reg, since, self._metric_id)
            ids = set(ch["ids"])
            for gone in set(self.jobs) - ids:
                del self.jobs[gone]
                self.rows.pop(gone, None)
            rolling = set(sorted(ids)[turn::full_reload_every])
            fetched = (ids - set(self.jobs)) | (ch["changed"] & ids) | rolling
            if fetched:
                for j in queries.runs_table(reg, ids=fetched, summary_keys=SUMMARY_KEYS):
                    self.jobs[j["id"]] = j
        self._updated_at, self._metric_id = ch["updated_at"], ch["metric_id"]
        self._add_history(reg, fetched, full)
        redo = set(self.jobs) if (full or reload_paper) else (fetched | ch[JobStatus.RUNNING]) & set(self.jobs)
        for jid in redo:
            self.rows[jid] = run_row(self.jobs[jid], self.paper, now, stale_after_s)
        drops = {jid: d for jid in redo if (d := metric_drop(self.jobs[jid], "R@1", DROP_POINTS))}
        warnings = self._warnings(queries.workers_table(reg), now, stale_after_s)
        return RunsUpdate(list(self.rows.values()), None if (full or reload_paper) else redo, drops, warnings,
                          self.counts, self.workers_alive)

    def _add_history(self, reg: Registry, fetched: set[int], full: bool) -> None:
        """Configs (searched as key=value; read once per job), overrides of the recipe, and the
        time of earlier attempts (re-read for the jobs that changed)."""
        new = [j for j in fetched if j not in self._configs]
        if new:
            self._configs.update(history.job_configs(reg, None if full and not self._configs else new))
        attempts = history.job_attempts(reg, None if full else fetched) if fetched else {}
        for jid in fetched:
            j = self.jobs.get(jid)
            if j is None:
                continue
            j["config"] = self._configs.get(jid, {})
            j["prior_elapsed_s"] = history.prior_elapsed_s(attempts.get(jid, []), j.get("started_at"))
            j["overrides"] = self._overrides_of(jid, j)

    def _overrides_of(self, jid: int, job: dict) -> list[str]:
        if jid in self._overrides:
            return self._overrides[jid]
        key = (job["dataset"], job["loss"], job.get("resolution") or 256)
        if key not in self._recipes:
            try:
                from ctxsim.train.recipes import recipe

                self._recipes[key] = recipe(*key).to_dict()
            except Exception:  # noqa: BLE001 - an unknown recipe (old registry): no overrides shown
                self._recipes[key] = {}
        diff = overrides_of(job.get("config") or {}, self._recipes[key])
        self._overrides[jid] = diff
        return diff

    def _warnings(self, workers: list, now: datetime, stale_after_s: float) -> list[str]:
        """Warnings (first on the status line, never cut): dead workers, running jobs without heartbeat."""
        self.counts = dict(Counter(j["status"] for j in self.jobs.values()))
        warnings = [f"worker {w['id']} dead (no heartbeat)" for w in workers
                    if worker_state(w, now, stale_after_s) == "dead"]
        n_stale = sum(r.stale for r in self.rows.values())
        if n_stale:
            warnings.append(f"{n_stale} running without heartbeat")
        self.workers_alive = sum(worker_state(w, now, stale_after_s) == "alive" for w in workers)
        return warnings


def checkpoint_files(run_dir: Optional[str]) -> list[dict[str, Any]]:
    """The ``*.pt`` / ``*.pth`` files of a run folder (and its ``checkpoints/``), newest first."""
    if not run_dir:
        return []
    root = Path(run_dir)
    out = []
    for folder in (root, root / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.suffix in (".pt", ".pth") and p.is_file():
                st = p.stat()
                out.append({"path": str(p), "name": str(p.relative_to(root)), "bytes": st.st_size,
                            "mtime": st.st_mtime})
    out.sort(key=lambda d: (-d["mtime"], d["name"]))
    return out


def timed(fn, *args, **kw) -> tuple[Any, float]:
    """(result, milliseconds)."""
    t0 = time.perf_counter()
    res = fn(*args, **kw)
    return res, (time.perf_counter() - t0) * 1000.0
