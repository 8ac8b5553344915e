"""What the dashboard reads, run inside thread workers: registry queries, incremental metric
series, the growing log file and the checkpoint files. No Textual imports here."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import create_engine, event

from ctxsim.registry import queries
from ctxsim.registry.db import Registry, describe_db_error, redact

READ_BUSY_TIMEOUT_MS = 1000  # a read blocked longer than this reports "locked" instead of waiting


def read_registry(reg: Registry) -> Registry:
    """A registry handle for the dashboard's reads.

    On SQLite the reads use their own engine: deferred (not BEGIN IMMEDIATE) transactions, so they
    never take the write lock from a worker, ``query_only`` so they cannot write, and a short busy
    timeout so a locked file is reported within a second instead of hanging a thread for 30 s.
    Other backends share the registry's engine.
    """
    if not reg.is_sqlite:
        return reg
    engine = create_engine(reg.url, connect_args={"timeout": READ_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA query_only=1")
        cur.close()

    return Registry(reg.url, engine)


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
class LogFollower:
    """Follows a growing text file (``<run_dir>/stdout.log``) from a byte offset.

    The first read starts ``tail_bytes`` before the end; later reads return only complete new
    lines; a file that shrank (truncated or replaced) is read again from the start.
    """

    path: Optional[Path]
    tail_bytes: int = 64 * 1024
    offset: int = -1
    _partial: str = ""
    _ident: Optional[tuple[int, int]] = None

    def read(self) -> tuple[list[str], bool]:
        """(new complete lines, reset) where reset means the caller should clear what it shows."""
        if self.path is None:
            return [], False
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        ident = (st.st_dev, st.st_ino)
        reset = False
        if self.offset < 0 or ident != self._ident or st.st_size < self.offset:
            reset = self.offset >= 0
            self.offset = max(0, st.st_size - self.tail_bytes) if self.offset < 0 else 0
            self._partial = ""
            self._ident = ident
            skip_first = self.offset > 0
        else:
            skip_first = False
        if st.st_size == self.offset:
            return [], reset
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(max(0, st.st_size - self.offset))
        self.offset += len(data)
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines = lines[1:]  # started mid-line
        return [ln.rstrip("\r") for ln in lines], reset


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
