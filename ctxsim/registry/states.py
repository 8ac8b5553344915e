"""Job states and job event kinds, as stored in the registry: ``str`` Enums.

A member compares equal to its stored string (``JobStatus.RUNNING == "running"``), formats as it
(``f"{JobStatus.DONE}"`` is ``done``) and binds to SQL as it, so rows written before these types
existed read back unchanged. Torch-free and cheap to import (the CLI and the dashboard key their
colours and filters by these).
"""

from __future__ import annotations

from enum import Enum

try:
    from enum import StrEnum
except ImportError:  # Python 3.10
    class StrEnum(str, Enum):  # type: ignore[no-redef]
        """str + Enum whose str() and format() are the value, as 3.11's StrEnum."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


class JobStatus(StrEnum):
    """Where a job is in its life (``jobs.status``): queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Queued or running: the job still has work ahead of it."""
        return self in ACTIVE_STATUSES

    @property
    def final(self) -> bool:
        """Done, failed or cancelled: what ``jobs.finish`` may set."""
        return self in FINAL_STATUSES


JOB_STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)
ACTIVE_STATUSES: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL_STATUSES: tuple[JobStatus, ...] = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

# Not a stored state: how `ctxsim ls` and the dashboard show a running job whose heartbeat expired.
STALE = "stale"

# rich style of each state, shared by `ctxsim ls` and the dashboard
JOB_STATUS_STYLE: dict[str, str] = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "bold green",
    JobStatus.DONE: "blue",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "dim",
    STALE: "bold yellow",
}


class EventKind(StrEnum):
    """Every kind of job event (``events.kind``)."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    START = "start"
    CHECKPOINT = "checkpoint"
    STOPPED = "stopped"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"
    REQUEUED = "requeued"
    RETRY = "retry"
    PRIORITY = "priority"
    LOG = "log"
    SLURM_SUBMITTED = "slurm_submitted"
    SLURM_START = "slurm_start"
    SLURM_REQUEUE = "slurm_requeue"
    SLURM_STATE = "slurm_state"  # the poller saw the Slurm job change state (with Slurm's reason)


EVENT_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)


class Executor(StrEnum):
    """Who runs a job (``jobs.executor``): a local worker, the Slurm poller, or the process that
    queued it (``ctxsim run``, the toy and reference commands)."""

    LOCAL = "local"
    SLURM = "slurm"
    FOREGROUND = "foreground"


QUEUE_EXECUTORS: tuple[Executor, ...] = (Executor.LOCAL, Executor.SLURM)  # what --executor may name
