"""What the dashboard reads, run inside thread workers: incremental metric series and the
checkpoint files. No Textual imports here. The read-only registry handle is
``ctxsim.registry.db.read_registry``; the log follower is ``ctxsim.runner.logs.LogFollower``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ctxsim.registry import queries
from ctxsim.registry.db import Registry, describe_db_error, redact


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
