"""How ``ctxsim run`` puts its run in the queue: resume an unfinished run of the same config, or
add a job (docs/architecture.md §4.1).

A foreground run of a config whose default folder (``ctxsim.registry.rundirs``) holds an unfinished
checkpoint continues there; when the job that ran it was stopped with Ctrl-C, that same job goes back
to the queue (its id, history and curves). Otherwise a new job is queued: a ``foreground`` job the
calling process runs at once, or a ``local`` one for a worker (``--detach``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ctxsim.registry import jobs
from ctxsim.registry.db import Registry
from ctxsim.registry.rundirs import run_folder
from ctxsim.registry.states import Executor


@dataclass(frozen=True)
class Submission:
    """The job a ``ctxsim run`` goes on with: new (``created``), resumed after Ctrl-C, or an identical
    job already queued or running (neither)."""

    job_id: int
    created: bool
    resumed: bool


def finished(run_dir: Path) -> bool:
    """Whether a run folder holds a finished run (its result.json says done)."""
    try:
        return json.loads((run_dir / "result.json").read_text()).get("status") == "done"
    except (OSError, ValueError, AttributeError):
        return False


def resume_folder(reg: Registry, cfg: Any, run_dir: Optional[Path], fresh: bool) -> Optional[Path]:
    """The folder a run goes to: ``run_dir`` when given; else, unless ``fresh``, the config's default
    folder when it is new or holds an unfinished run (resumed from its checkpoint); else None (the job
    gets a folder of its own)."""
    if run_dir is not None or fresh:
        return run_dir
    candidate = run_folder(jobs.default_runs_root(reg), jobs.config_fields(cfg))
    return None if finished(candidate) else candidate


def submit_run(reg: Registry, cfg: Any, run_dir: Optional[Path], detach: bool, name: Optional[str] = None,
               tags: Iterable[str] = (), n_gpus: int = 0) -> Submission:
    """Resumes the Ctrl-C-stopped foreground job of ``cfg`` in ``run_dir``, or queues a job: for this
    process (foreground) or, with ``detach``, for a worker."""
    jid = jobs.resume_stopped(reg, cfg, run_dir) if run_dir is not None and not detach else None
    if jid is not None:
        return Submission(jid, created=False, resumed=True)
    [(jid, created)] = jobs.enqueue_many(reg, [cfg], name=name, tags=list(tags), n_gpus=n_gpus,
                                         executor=Executor.LOCAL if detach else Executor.FOREGROUND,
                                         run_dirs=[run_dir] if run_dir is not None else None)
    return Submission(jid, created=created, resumed=False)


def withdraw(reg: Registry, sub: Submission) -> None:
    """Undoes ``submit_run`` (Ctrl-C during the write): removes a new job, cancels a resumed one."""
    if sub.created:
        jobs.rm(reg, sub.job_id)
    elif sub.resumed:
        jobs.cancel(reg, sub.job_id)
