"""Typed messages posted by the dashboard's thread workers back to the UI thread."""

from __future__ import annotations

from typing import Any, Optional

from textual.message import Message

from ctxsim.tui.format import RunRow


class RegistryStatus(Message):
    """A read finished: ``problem`` is None when it succeeded, else one line saying what is wrong."""

    def __init__(self, problem: Optional[str], elapsed_ms: Optional[float] = None) -> None:
        super().__init__()
        self.problem = problem
        self.elapsed_ms = elapsed_ms


class RunsLoaded(Message):
    """All runs, formatted, plus the facts the status line shows; ``changed`` holds the ids whose
    row was re-formatted (None: all of them)."""

    def __init__(self, rows: list[RunRow], elapsed_ms: float, notes: list[str],
                 changed: Optional[set[int]] = None,
                 drops: Optional[dict[int, tuple[float, float]]] = None) -> None:
        super().__init__()
        self.rows = rows
        self.drops = drops or {}  # running job id -> (best, last) R@1 % after a sharp fall
        self.changed = changed
        self.elapsed_ms = elapsed_ms
        self.notes = notes


class DetailLoaded(Message):
    """A job's row, a copy of all its points held so far (``new_points`` of them new) and its paper curve."""

    def __init__(self, job_id: int, detail: Optional[dict[str, Any]], new_points: int,
                 paper: Optional[dict[str, Any]], paper_curve: list[tuple[int, float]],
                 events: list[dict[str, Any]], checkpoints: list[dict[str, Any]],
                 points: Optional[dict[str, list[tuple[int, float]]]] = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.points = points or {}
        self.detail = detail
        self.new_points = new_points
        self.paper = paper
        self.paper_curve = paper_curve
        self.events = events
        self.checkpoints = checkpoints


class LogLines(Message):
    def __init__(self, job_id: int, lines: list[str], reset: bool) -> None:
        super().__init__()
        self.job_id = job_id
        self.lines = lines
        self.reset = reset


class QueueLoaded(Message):
    """Workers, queue rows and this machine's GPUs (None: no GPU / no NVML)."""

    def __init__(self, workers: list[dict[str, Any]], jobs: list[dict[str, Any]],
                 gpus: Optional[list[dict[str, Any]]] = None) -> None:
        super().__init__()
        self.workers = workers
        self.jobs = jobs
        self.gpus = gpus


class CompareLoaded(Message):
    def __init__(self, runs: list[dict[str, Any]], series: dict[int, dict[str, list[tuple[int, float]]]],
                 paper_curves: dict[tuple, list[tuple[int, float]]]) -> None:
        super().__init__()
        self.runs = runs
        self.series = series
        self.paper_curves = paper_curves


class DiffLoaded(Message):
    """Two jobs' parsed configs (None: that job is gone)."""

    def __init__(self, a: int, b: int, a_config: Optional[dict[str, Any]], b_config: Optional[dict[str, Any]]) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.a_config, self.b_config = a_config, b_config


class WriteWaiting(Message):
    """A write from the UI has waited over a second for the registry lock (``done``: it ended)."""

    def __init__(self, what: str, done: bool = False) -> None:
        super().__init__()
        self.what = what
        self.done = done


class ActionDone(Message):
    """A write (enqueue, cancel, retry, priority) finished; ``ok`` False means ``text`` is the error."""

    def __init__(self, text: str, ok: bool = True) -> None:
        super().__init__()
        self.text = text
        self.ok = ok


class StudiesLoaded(Message):
    """The tuning studies in the registry database (``ctxsim.tuning.list_studies``)."""

    def __init__(self, studies: list[dict[str, Any]]) -> None:
        super().__init__()
        self.studies = studies
