"""What the training loop reports: events and the sinks that receive them (architecture §1-2).

Event kinds and their ``data`` fields:

- ``start``: config (dict), run_dir, epochs, steps_per_epoch, start_epoch (0 unless resumed), fingerprint
  (the data fingerprint, ctxsim.data.fingerprint)
- ``step``: epoch, step (global, 1-based), loss, terms (dict name -> float), lr, images_per_s
- ``epoch``: epoch (1-based, completed), loss (mean over the epoch), seconds
- ``eval``: epoch, metrics (dict, e.g. {"R@1": .., "MAP@R": .., "RP": ..}), split ("test", or "val" for the
  validation classes of ``val_classes``: the test split is then evaluated once, at the end)
- ``checkpoint``: epoch, path
- ``done``: metrics (final), selected ("last" | "best"), best_epoch, selected_on ("test" | "val" | None), per_query
  (path of the run folder's per_query.npz, or None: ctxsim.eval.per_query)
- ``failed``: error (one line), traceback (str)
- ``stopped``: epoch (completed), step, batch_in_epoch, checkpoint (path or None): should_stop() asked
  the run to stop between steps; it can resume from the checkpoint
- ``log``: message (free text)

Metric keys derived from events (the registry stores them with these names):
``train/loss`` and ``train/<term>``, ``train/lr``, ``train/images_per_s`` at step = global step;
``epoch/loss`` at step = epoch; eval metrics under their own names ("R@1", "MAP@R", "RP") at step = epoch; validation ones as "val/R@1", ...
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

EVENT_KINDS = ("start", "step", "epoch", "eval", "checkpoint", "done", "failed", "log", "stopped")


@dataclass
class Event:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time, **self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Event":
        d = dict(d)
        kind = d.pop("kind")
        t = d.pop("time", time.time())
        return cls(kind, d, t)


def metric_points(event: Event) -> list[tuple[str, int, float]]:
    """(key, step, value) points that an event contributes to a run's metric series."""
    d = event.data
    if event.kind == "step":
        pts = [("train/loss", int(d["step"]), float(d["loss"]))]
        pts += [(f"train/{k}", int(d["step"]), float(v)) for k, v in (d.get("terms") or {}).items()]
        if d.get("lr") is not None:
            pts.append(("train/lr", int(d["step"]), float(d["lr"])))
        if d.get("images_per_s") is not None:
            pts.append(("train/images_per_s", int(d["step"]), float(d["images_per_s"])))
        return pts
    if event.kind == "epoch":
        return [("epoch/loss", int(d["epoch"]), float(d["loss"]))]
    if event.kind == "eval":
        prefix = "val/" if d.get("split") == "val" else ""  # validation split (val_classes): "val/R@1", ...
        return [(prefix + k, int(d["epoch"]), float(v)) for k, v in d["metrics"].items()]
    return []


@runtime_checkable
class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink:
    """Keeps every event in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class JsonlSink:
    """Appends one JSON object per event to a file (``<run_dir>/events.jsonl``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, event: Event) -> None:
        self._fh.write(json.dumps(event.to_dict(), default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class MultiSink:
    """Forwards each event to several sinks."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def emit(self, event: Event) -> None:
        for s in self.sinks:
            s.emit(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def read_events(path: str | os.PathLike) -> list[Event]:
    """Reads a JSON-lines event file, ignoring a torn last line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(Event.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError):
                continue
    return out
