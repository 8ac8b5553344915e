"""The "probe" job kind: a queue self-test that exercises the whole runner path without torch.

A probe job emits the same event stream as ``fit`` (start, step, epoch, eval, checkpoint, done)
with deterministic values, sleeps ``sleep_s`` per step to stand in for work, writes an atomic
``checkpoint.json`` after each epoch and resumes from it. It learns nothing and its values are
not results: it exists to test and benchmark the queue, the workers, cancel and resume in seconds.
Config: ``{"kind": "probe", "epochs": E, "steps_per_epoch": S, "sleep_s": t, "fail": false,
"spawn_child": false}`` (``spawn_child`` starts a long ``sleep`` in the job's process group, the way
data-loader workers live there, to check that cancel and shutdown stop the whole group).

An optional ``"gate": {"file": PATH, "after_step": S}`` holds the probe before any step past ``S``
until ``PATH`` exists (it still stops at once when asked to): whoever drives the probe decides when
it may go on, so a test can signal, kill or preempt it at a known point (after step ``S``; after its
epoch checkpoint when ``S`` ends an epoch) with no race against the probe's end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ctxsim.train.events import Event, EventSink


def probe_config(epochs: int = 2, steps_per_epoch: int = 5, sleep_s: float = 0.0, fail: bool = False,
                 label: Any = None, spawn_child: bool = False, gate_file: str | os.PathLike | None = None,
                 gate_step: int = 0) -> dict[str, Any]:
    """A probe job config (``label`` keeps otherwise identical probes distinct for dedupe). With
    ``gate_file`` the probe runs no step past ``gate_step`` until that file exists (module docstring)."""
    cfg: dict[str, Any] = {"kind": "probe", "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                           "sleep_s": sleep_s, "fail": fail, "label": label, "spawn_child": spawn_child}
    if gate_file is not None:
        cfg["gate"] = {"file": str(gate_file), "after_step": int(gate_step)}
    return cfg


def _wait_for_gate(path: Path, should_stop: Optional[Callable[[], bool]], poll_s: float = 0.02) -> bool:
    """Blocks until ``path`` exists (True) or ``should_stop()`` says so (False)."""
    while not path.exists():
        if should_stop is not None and should_stop():
            return False
        time.sleep(poll_s)
    return True


def run_probe(cfg: dict[str, Any], sink: EventSink, run_dir: str | os.PathLike,
              should_stop: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
    """Runs a probe job; returns {"epochs_run": [...], "stopped": bool, "start_epoch": int}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.json"
    epochs, spe = int(cfg.get("epochs", 2)), int(cfg.get("steps_per_epoch", 5))
    start_epoch = json.loads(ckpt.read_text())["epoch"] if ckpt.exists() else 0
    child = subprocess.Popen(["sleep", "600"]) if cfg.get("spawn_child") else None
    with open(run_dir / "probe_attempts.log", "a") as fh:  # one line per (re)start: tests count them
        fh.write(f"{os.getpid()} start_epoch={start_epoch} child={child.pid if child else ''}\n")
    sink.emit(Event("start", {"config": cfg, "run_dir": str(run_dir), "epochs": epochs,
                              "steps_per_epoch": spe, "start_epoch": start_epoch}))
    gate = cfg.get("gate") or None
    ran = []
    for epoch in range(start_epoch + 1, epochs + 1):
        total = 0.0
        for i in range(spe):
            if should_stop is not None and should_stop():
                return {"epochs_run": ran, "stopped": True, "start_epoch": start_epoch}
            step = (epoch - 1) * spe + i + 1
            if gate is not None and step > int(gate.get("after_step", 0)):
                if not _wait_for_gate(Path(gate["file"]), should_stop):
                    return {"epochs_run": ran, "stopped": True, "start_epoch": start_epoch}
                gate = None  # open: it stays open for the rest of this run
            loss = 1.0 / step
            total += loss
            sink.emit(Event("step", {"epoch": epoch, "step": step, "loss": loss, "terms": {"probe": loss / 2},
                                     "lr": 1e-4, "images_per_s": None}))
            if cfg.get("fail") and epoch == epochs and i == spe - 1:
                raise RuntimeError("probe job asked to fail (fail=true)")
            if cfg.get("sleep_s"):
                time.sleep(float(cfg["sleep_s"]))
        sink.emit(Event("epoch", {"epoch": epoch, "loss": total / spe, "seconds": 0.0}))
        sink.emit(Event("eval", {"epoch": epoch, "metrics": {"R@1": epoch / epochs}, "split": "test"}))
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": epoch}))
        os.replace(tmp, ckpt)
        sink.emit(Event("checkpoint", {"epoch": epoch, "path": str(ckpt)}))
        ran.append(epoch)
    sink.emit(Event("done", {"metrics": {"R@1": 1.0}, "selected": "last", "best_epoch": epochs, "selected_on": None}))
    return {"epochs_run": ran, "stopped": False, "start_epoch": start_epoch}
