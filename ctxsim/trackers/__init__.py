"""Trackers: each mirrors a run into a tool researchers already watch, as one more EventSink
beside the registry's (the registry stays the source of truth). A tracker that fails logs one
warning and stops mirroring; it never fails the training job.

``tracker_sinks(config, run_dir)`` builds the sinks a config's ``track`` key asks for."""

from __future__ import annotations

import importlib
import logging
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
    """An EventSink that cannot fail its caller: the first error is logged as one warning and the
    tracker is switched off for the rest of the run."""

    def __init__(self, inner: EventSink, name: str) -> None:
        self.inner, self.name, self.failed = inner, name, False

    def _guard(self, what: str, fn, *args: Any) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - a tracker must never stop training
            self.failed = True
            log.warning("tracker %s failed (%s: %s); the run goes on without it (the registry has everything)",
                        self.name, what, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    def emit(self, event: Event) -> None:
        self._guard("emit", self.inner.emit, event)

    def close(self) -> None:
        self._guard("close", self.inner.close)


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
