"""Slurm job states of many jobs in one call per poll, with accounting on or off.

``squeue -t all`` knows pending, running and recently ended jobs (those ended less than the
cluster's ``MinJobAge`` ago, 300 s by default). A job it no longer knows is asked of ``sacct`` (one
call for all of them), which answers when accounting (slurmdbd) is on. With accounting off, such a
job is ``GONE``: it ended and its outcome is lost; the poller treats it as ended without a word.

submitit's own watcher reads ``sacct`` only: with accounting off every state it gives is UNKNOWN.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Callable, Iterable

from ctxsim.errors import SlurmQueryError, one_line

__all__ = ["GONE", "SlurmQueryError", "killed_by_warning_signal", "query_states"]

log = logging.getLogger(__name__)

GONE = "GONE"  # known neither to squeue nor to sacct (accounting off, or ended long ago)
SQUEUE_FORMAT = "%i|%T|%r"  # id, state, reason (pending or ended: Resources, launch failed...)
Runner = Callable[..., subprocess.CompletedProcess]


def _parse(text: str) -> dict[str, str]:
    """``id|STATE|reason`` lines -> {id: "STATE (reason)"} (no reason shown when Slurm gives None);
    job steps (``12.batch``) are left out."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        jid, state, reason = ([*line.strip().split("|"), "", ""])[:3]
        if jid and state and "." not in jid:
            reason = reason.strip()
            out[jid] = state.strip() + (f" ({reason})" if reason and reason not in ("None", "(null)") else "")
    return out


def query_states(slurm_ids: Iterable[str], run: Runner = subprocess.run, timeout_s: float = 60.0) -> dict[str, str]:
    """{slurm id: "STATE (reason)"} for every id asked (array tasks as ``123_4``), with at most one ``squeue``
    and one ``sacct`` call. Raises SlurmQueryError when squeue itself fails."""
    ids = sorted({str(i) for i in slurm_ids})
    if not ids:
        return {}
    base = sorted({i.split("_")[0] for i in ids})
    r = run(["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ",".join(base)],
            capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0 and "invalid job id" not in (r.stderr or "").lower():
        raise SlurmQueryError(f"squeue failed: {one_line((r.stderr or '').strip() or f'exit code {r.returncode}')}")
    states = _parse(r.stdout if r.returncode == 0 else "")
    missing = [i for i in ids if i not in states]
    if missing:
        r = run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)],
                capture_output=True, text=True, timeout=timeout_s)
        if r.returncode == 0:
            states.update({k: v for k, v in _parse(r.stdout).items() if k in missing})
        else:
            log.debug("sacct: %s", one_line((r.stderr or "").strip() or f"exit code {r.returncode}"))
    return {i: states.get(i, GONE) for i in ids}


WARNING_SIGNAL = 12  # SIGUSR2: what Slurm sends before a time limit (--signal) or a preemption


def killed_by_warning_signal(slurm_id: str, run: Runner = subprocess.run, timeout_s: float = 60.0) -> bool:
    """Whether a job that ended FAILED died of Slurm's own warning signal (USR2: exit status 140,
    or signal 12), i.e. before its handler was installed: Slurm may send it up to 60 s early, so with
    a time limit close to ``signal_delay_s`` it can come as the job starts; not the job's fault."""
    try:
        r = run(["scontrol", "show", "job", "-o", str(slurm_id)], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return False
    for field in (r.stdout or "").split():
        if field.startswith("ExitCode="):
            status, _, sig = field.removeprefix("ExitCode=").partition(":")
            return status == str(128 + WARNING_SIGNAL) or sig == str(WARNING_SIGNAL)
    return False
