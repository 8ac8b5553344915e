"""TensorBoard: one log dir per run, ``<run folder>/tensorboard`` (``tensorboard --logdir runs/``
shows every run), through ``torch.utils.tensorboard.SummaryWriter``. Per-step loss terms and
per-epoch Recall@K / MAP@R as scalars under the registry's keys; the config as text at the start;
the selected epoch and final metrics (``final/<key>``) at the end. A resumed run writes a new event
file into the same folder, so its curves continue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ctxsim.train.events import Event, metric_points

LOG_DIR = "tensorboard"


class TensorBoardSink:
    def __init__(self, config: dict[str, Any], run_dir: Optional[Path]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if run_dir is None:
            raise ValueError("TensorBoard writes into the run folder, and this run has none")
        self.log_dir = Path(run_dir) / LOG_DIR
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.config = config

    def emit(self, event: Event) -> None:
        for key, step, value in metric_points(event):
            self.writer.add_scalar(key, value, step)
        d = event.data
        if event.kind == "start" and not d.get("resumed"):
            cfg = d.get("config") or self.config
            self.writer.add_text("config", "```\n" + json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n```", 0)
        elif event.kind == "done":
            step = int(d.get("epochs") or 0)
            for key, value in (d.get("metrics") or {}).items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"final/{key}", float(value), step)
            self.writer.add_text("summary", f"selected: {d.get('selected')} (epoch {d.get('best_epoch')}), "
                                 f"{d.get('epochs')} epochs, {d.get('steps')} steps, {d.get('seconds', 0):.0f} s", step)
        if event.kind in ("eval", "checkpoint", "done", "stopped", "failed"):
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
