"""``ctxsim doctor``: is the registry sound, and does every job's state agree with the world?

Checks, each a ``Finding``:

- the file (SQLite): ``PRAGMA integrity_check`` through the standard library, read-only, so that
  a damaged file is examined before anything else opens it; PostgreSQL: every ctxsim table is read
  through (a damaged page with data checksums on fails the read);
- the schema: its version against this ctxsim's;
- jobs marked running that nothing runs: a heartbeat older than the expiry (the same bound as the
  workers' reaper), a process on this host that is gone, a Slurm job that ended or is unknown.

``fix`` puts such jobs back in the queue (or fails them, as the reaper does: a foreground run, or
attempts used up) with the reason in their events. Nothing is ever deleted.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import select, text

from ctxsim.registry.db import Registry
from ctxsim.registry.models import Job, utcnow
from ctxsim.registry.states import Executor, JobStatus

INTEGRITY_LINES = 10  # problems of integrity_check shown (it can list thousands)
TABLES = ("jobs", "metrics", "summaries", "events", "workers", "tags", "baselines", "meta")


@dataclass(frozen=True)
class Finding:
    """One check's outcome: ``ok`` (nothing wrong), ``problem`` (needs a person or ``--fix``)."""

    ok: bool
    check: str
    message: str
    job_id: Optional[int] = None
    fixable: bool = False


def sqlite_integrity(path: Path) -> list[Finding]:
    """``PRAGMA integrity_check`` of a SQLite file, opened read-only with the standard library."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return [Finding(False, "integrity", f"{path}: {e}")]
    if rows == ["ok"]:
        return [Finding(True, "integrity", f"{path}: integrity_check ok")]
    shown = rows[:INTEGRITY_LINES] + ([f"... {len(rows) - INTEGRITY_LINES} more"] if len(rows) > INTEGRITY_LINES else [])
    return [Finding(False, "integrity", f"{path}: {line}") for line in shown]


def postgres_integrity(reg: Registry) -> list[Finding]:
    """Every ctxsim table read through (PostgreSQL verifies page checksums as it reads, when on)."""
    out = []
    with reg.engine.connect() as conn:
        for table in TABLES:
            try:
                n = conn.execute(text(f"SELECT count(*) FROM (SELECT * FROM {table}) AS t")).scalar()
            except Exception as e:  # noqa: BLE001 - a failing table is the finding
                conn.rollback()
                out.append(Finding(False, "integrity", f"table {table}: {str(getattr(e, 'orig', e)).strip().splitlines()[0]}"))
                continue
            out.append(Finding(True, "integrity", f"table {table}: {n} rows read"))
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def stuck_jobs(reg: Registry, expiry_s: float, host: Optional[str] = None,
               alive: Callable[[int], bool] = pid_alive,
               slurm_ended: Optional[Callable[[list[str]], dict[str, str]]] = None) -> list[Finding]:
    """Running jobs that nothing runs (see the module docstring); one finding each. ``slurm_ended``:
    of the Slurm ids given, those whose job ended or is unknown, with the state (``ctxsim doctor``
    passes one that asks squeue/sacct)."""
    host = host or socket.gethostname()
    cutoff = utcnow() - timedelta(seconds=expiry_s)
    with reg.Session() as s:
        running = list(s.scalars(select(Job).where(Job.status == JobStatus.RUNNING).order_by(Job.id)))
        for j in running:
            s.expunge(j)
    slurm = {}
    sids = [j.slurm_id for j in running if j.executor == Executor.SLURM and j.slurm_id]
    if sids and slurm_ended is not None:
        try:
            slurm = slurm_ended(sids)
        except Exception as e:  # noqa: BLE001 - no Slurm answer: the other checks still count
            slurm = {}
            out = [Finding(False, "slurm", f"cannot ask Slurm about {len(sids)} job(s): {e}")]
        else:
            out = []
    else:
        out = []
    for j in running:
        if j.heartbeat_at is not None and j.heartbeat_at < cutoff:
            age = (utcnow() - j.heartbeat_at).total_seconds()
            out.append(Finding(False, "job", f"job {j.id} is running but has had no heartbeat for {age:.0f} s "
                               f"(from {j.worker_id}; the reaper's bound is {expiry_s:g} s)", j.id, True))
        elif j.worker_host == host and j.worker_pid and not alive(j.worker_pid) and j.executor != Executor.SLURM:
            out.append(Finding(False, "job", f"job {j.id} is running but its process {j.worker_pid} on {host} is gone",
                               j.id, True))
        elif j.slurm_id in slurm:
            out.append(Finding(False, "job", f"job {j.id} is running but its Slurm job {j.slurm_id} is "
                               f"{slurm[j.slurm_id]}", j.id, True))
    if not any(f.check == "job" for f in out):
        out.append(Finding(True, "job", f"{len(running)} running job(s), each with a live process or Slurm job"))
    return out


def fix_jobs(reg: Registry, findings: list[Finding]) -> list[tuple[int, str]]:
    """Requeues (or fails, by the reaper's rules) each fixable stuck job; returns (id, new status)."""
    from ctxsim.registry import jobs

    done = []
    for f in findings:
        if f.fixable and f.job_id is not None:
            new = jobs.requeue(reg, f.job_id, f"ctxsim doctor --fix: {f.message.split(' is running but ', 1)[-1]}")
            done.append((f.job_id, new or "unchanged"))
    return done
