"""Typed messages posted by the dashboard's thread workers back to the UI thread. Dataclasses
(Textual's Message initialises itself in ``__post_init__``) without generated equality: a message
is one event, compared and hashed by identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from textual.message import Message

from ctxsim.tui.format import RunRow


@dataclass(eq=False)
class RegistryStatus(Message):
    """A read finished: ``problem`` is None when it succeeded, else one line saying what is wrong."""

    problem: Optional[str]
    elapsed_ms: Optional[float] = None


@dataclass(eq=False)
class RunsLoaded(Message):
    """All runs, formatted, plus the facts the status line shows; ``changed`` holds the ids whose
    row was re-formatted (None: all of them)."""

    rows: list[RunRow]
    elapsed_ms: float
    notes: list[str]
    changed: Optional[set[int]] = None
    drops: Optional[dict[int, tuple[float, float]]] = None  # running job id -> (best, last) R@1 % after a sharp fall

    def __post_init__(self) -> None:
        super().__post_init__()
        self.drops = self.drops or {}


@dataclass(eq=False)
class DetailLoaded(Message):
    """A job's row, a copy of all its points held so far (``new_points`` of them new) and its paper curve."""

    job_id: int
    detail: Optional[dict[str, Any]]
    new_points: int
    paper: Optional[dict[str, Any]]
    paper_curve: list[tuple[int, float]]
    events: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    points: Optional[dict[str, list[tuple[int, float]]]] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.points = self.points or {}


@dataclass(eq=False)
class LogLines(Message):
    """New lines of a job's log (``reset``: the log started over, e.g. a new attempt)."""

    job_id: int
    lines: list[str]
    reset: bool


@dataclass(eq=False)
class QueueLoaded(Message):
    """Workers, queue rows and this machine's GPUs (None: no GPU / no NVML)."""

    workers: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    gpus: Optional[list[dict[str, Any]]] = None


@dataclass(eq=False)
class CompareLoaded(Message):
    """The compared runs, their metric series and the paper curves of their cells."""

    runs: list[dict[str, Any]]
    series: dict[int, dict[str, list[tuple[int, float]]]]
    paper_curves: dict[tuple, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass(eq=False)
class DiffLoaded(Message):
    """Two jobs' parsed configs (None: that job is gone)."""

    a: int
    b: int
    a_config: Optional[dict[str, Any]]
    b_config: Optional[dict[str, Any]]


@dataclass(eq=False)
class WriteWaiting(Message):
    """A write from the UI has waited over a second for the registry lock (``done``: it ended)."""

    what: str
    done: bool = False


@dataclass(eq=False)
class ActionDone(Message):
    """A write (enqueue, cancel, retry, priority) finished; ``ok`` False means ``text`` is the error."""

    text: str
    ok: bool = True


@dataclass(eq=False)
class StudiesLoaded(Message):
    """The tuning studies in the registry database (``ctxsim.tuning.list_studies``)."""

    studies: list[dict[str, Any]]
