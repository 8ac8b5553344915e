"""Trackers: each mirrors a run into a tool researchers already watch, as one more EventSink
beside the registry's (the registry stays the source of truth). A tracker that fails logs one
warning and stops mirroring; it never fails the training job.

``tracker_sinks(config, run_dir)`` builds the sinks a config's ``track`` key asks for."""

from __future__ import annotations

import importlib
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Optional

from ctxsim.names import TRACKER_LIBRARIES, check_tracker_names, require_trackers
from ctxsim.train.events import Event, EventSink

__all__ = ["SINKS", "TRACKER_LIBRARIES", "GuardedSink", "check_tracker_names", "require_trackers", "tracker_sinks"]

# tracker name -> "module:class" of its sink, built as cls(config, run_dir)
SINKS: dict[str, str] = {"tensorboard": "ctxsim.trackers.tensorboard:TensorBoardSink",
                         "mlflow": "ctxsim.trackers.mlflow:MLflowSink", "wandb": "ctxsim.trackers.wandb:WandbSink"}

log = logging.getLogger(__name__)


class GuardedSink:
    """An EventSink that can neither fail nor slow its caller: events go through a queue to a thread
    that feeds the tracker. The tracker's first error is logged as one warning and switches it off
    for the rest of the run; so does a tracker that falls ``max_backlog`` events behind (a server
    that hangs). ``close`` waits at most ``close_timeout_s`` for the backlog."""

    _END = object()

    def __init__(self, inner: EventSink, name: str, max_backlog: int = 20_000, close_timeout_s: float = 30.0) -> None:
        self.inner, self.name, self.close_timeout_s = inner, name, close_timeout_s
        self.failed = False
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_backlog)
        self._thread = threading.Thread(target=self._drain, name=f"tracker-{name}", daemon=True)
        self._thread.start()

    def _warn(self, what: str, e: BaseException) -> None:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("tracker %s failed (%s: %s); the run goes on without it (the registry has everything)",
                    self.name, what, text)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                if not self.failed:
                    try:
                        self.inner.close()
                    except Exception as e:  # noqa: BLE001 - a tracker must never stop training
                        self.failed = True
                        self._warn("close", e)
                return
            if self.failed:
                continue
            try:
                self.inner.emit(item)
            except Exception as e:  # noqa: BLE001 - a tracker must never stop training
                self.failed = True
                self._warn("emit", e)

    def emit(self, event: Event) -> None:
        if self.failed:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.failed = True
            log.warning("tracker %s fell %d events behind; the run goes on without it", self.name, self._queue.maxsize)

    def close(self) -> None:
        try:
            self._queue.put(self._END, timeout=self.close_timeout_s)
        except queue.Full:
            return
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():
            log.warning("tracker %s did not finish within %.0f s; left behind", self.name, self.close_timeout_s)


def tracker_sinks(config: dict[str, Any], run_dir: Optional[str | Path]) -> list[EventSink]:
    """The guarded sinks of ``config["track"]`` for a run in ``run_dir``; a tracker that cannot
    start is one warning and no sink (the run goes on)."""
    out: list[EventSink] = []
    for name in config.get("track") or []:
        try:
            module, cls = SINKS[name].split(":")
            sink = getattr(importlib.import_module(module), cls)(config, Path(run_dir) if run_dir else None)
        except Exception as e:  # noqa: BLE001 - no tracker is worth a failed run
            log.warning("tracker %s not started: %s", name, str(e).strip().splitlines()[0] if str(e).strip() else e)
            continue
        out.append(GuardedSink(sink, name))
    return out
