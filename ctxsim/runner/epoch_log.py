"""One line per epoch (and every N steps) in a worker job's log: loss, metrics and images/s.

A worker job's stdout is its ``<run_dir>/stdout.log`` (what ``ctxsim logs`` and the dashboard's Log
tab follow); without this sink that log holds only start-up lines. ``EpochLogSink`` is added to a
job's sinks by ``ctxsim.runner.job``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from ctxsim.train.events import Event

DEFAULT_EVERY_STEPS = 100


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


class EpochLogSink:
    """Writes a line for every epoch, eval, checkpoint, end, and every ``every_steps`` steps."""

    def __init__(self, stream: Optional[TextIO] = None, every_steps: int = DEFAULT_EVERY_STEPS) -> None:
        self.stream = stream
        self.every_steps = max(1, int(every_steps))
        self.epochs: Optional[int] = None
        self._ips: Optional[float] = None  # the last step's images/s

    def _write(self, text: str) -> None:
        out = self.stream or sys.stdout
        out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        out.flush()

    def emit(self, event: Event) -> None:
        d = event.data
        k = event.kind
        if k == "start":
            self.epochs = d.get("epochs")
            self._write(f"start: {self.epochs} epochs, {d.get('steps_per_epoch')} steps each"
                        + (f", resuming after epoch {d['start_epoch']}" if d.get("start_epoch") else ""))
        elif k == "step":
            if d.get("images_per_s") is not None:
                self._ips = d["images_per_s"]
            if d.get("step") and d["step"] % self.every_steps == 0:
                self._write(f"step {d['step']} (epoch {d.get('epoch')}) loss {_num(d.get('loss'))}"
                            + (f" · {self._ips:.0f} img/s" if self._ips is not None else ""))
        elif k == "epoch":
            total = f"/{self.epochs}" if self.epochs else ""
            self._write(f"epoch {d.get('epoch')}{total} loss {_num(d.get('loss'))}"
                        + (f" · {d['seconds']:.1f} s" if d.get("seconds") is not None else "")
                        + (f" · {self._ips:.0f} img/s" if self._ips is not None else ""))
        elif k == "eval":
            metrics = d.get("metrics") or {}
            shown = " ".join(f"{m} {100 * v:.2f}" for m, v in metrics.items() if isinstance(v, (int, float)))
            self._write(f"eval epoch {d.get('epoch')} ({d.get('split', 'test')}): {shown}")
        elif k == "checkpoint":
            self._write(f"checkpoint epoch {d.get('epoch')}: {d.get('path')}")
        elif k in ("done", "failed", "stopped"):
            self._write(f"{k}" + (f": {d['error']}" if d.get("error") else ""))

    def close(self) -> None:
        pass
