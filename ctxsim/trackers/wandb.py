"""Weights & Biases: one W&B run per ctxsim run, through ``wandb.init`` (``WANDB_PROJECT``, default
"ctxsim"; ``WANDB_MODE=offline`` works as usual). Runs are grouped by dataset/loss/resolution and the
config without its seed, so the seeds of one setting are one group. The run's id is kept in
``<run folder>/wandb_run_id`` and a resumed job continues the same W&B run (``resume="allow"``).
Loss terms are logged against ``train/step`` and retrieval metrics against ``epoch``
(``define_metric``); the final metrics and the selected epoch go in the run's summary."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Optional

from ctxsim.files import atomic_write
from ctxsim.train.events import Event, metric_points

ID_FILE = "wandb_run_id"


def group_of(config: dict[str, Any]) -> str:
    """``<dataset>-<loss>-<resolution>-<hash of the config without its seed>``: one group per setting."""
    from ctxsim.train.config import RunConfig

    try:
        h = RunConfig.from_dict(config).config_hash(exclude=("seed",))[:8]
    except Exception:  # noqa: BLE001 - a config of another kind: group by its names only
        h = "any"
    return f"{config.get('dataset')}-{config.get('loss')}-{config.get('resolution')}-{h}"


class WandbSink:
    def __init__(self, config: dict[str, Any], run_dir: Optional[Path]) -> None:
        import wandb

        if run_dir is None:
            raise ValueError("W&B keeps its run id in the run folder, and this run has none")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]  # W&B ids: [a-z0-9]
        if not id_file.is_file():
            with atomic_write(id_file, "w") as fh:
                fh.write(run_id + "\n")
        name = config.get("name") or f"{config.get('dataset')}-{config.get('loss')}-{config.get('resolution')}-seed{config.get('seed')}"
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ctxsim"), id=run_id, resume="allow",
                              name=name, group=group_of(config), job_type=str(config.get("loss")), config=config,
                              dir=str(run_dir), reinit="create_new")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")
        for key in ("R@*", "MAP@R", "RP", "val/*"):
            self.run.define_metric(key, step_metric="epoch")
        self.finished = False

    def emit(self, event: Event) -> None:
        points = metric_points(event)
        if points:
            step_key = "train/step" if event.kind == "step" else "epoch"
            self.run.log({step_key: points[0][1], **{k: v for k, _s, v in points}})
        if event.kind == "done":
            d = event.data
            self.run.summary.update({f"final/{k}": v for k, v in (d.get("metrics") or {}).items()
                                     if isinstance(v, (int, float))})
            self.run.summary.update({"selected_epoch": d.get("best_epoch"), "selected": d.get("selected")})
            self.run.finish()
            self.finished = True
        elif event.kind == "failed":
            self.run.finish(exit_code=1)
            self.finished = True

    def close(self) -> None:
        if not self.finished:
            self.run.finish()
            self.finished = True
