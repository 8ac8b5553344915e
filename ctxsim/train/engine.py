"""Running a configuration: ``fit`` (the loop of a ``Trainer`` from start or checkpoint to the end,
reference-implementation.md §3) and ``fit_in_dir`` (``fit`` with a run folder's files).

It knows nothing about the registry: it reports through events (ctxsim.train.events) to the sink it
is given, and keeps its state in ``<run_dir>/checkpoint.pt`` so that a run can resume. Building a
run lives in ``ctxsim.train.build``, the loop's state and steps in ``ctxsim.train.trainer``.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ctxsim.data.fingerprint import FINGERPRINT_NAME, data_fingerprint
from ctxsim.errors import CtxsimError
from ctxsim.eval.per_query import PER_QUERY_NAME
from ctxsim.train.build import deterministic_mode, resolve_device
from ctxsim.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ctxsim.train.config import RunConfig
from ctxsim.train.distributed import DistributedRun
from ctxsim.train.distributed import setup as dist_setup
from ctxsim.train.events import Event, EventSink, JsonlSink, MultiSink, NullSink
from ctxsim.train.trainer import FitResult, Trainer, error_line

__all__ = ["CONFIG_NAME", "EVENTS_NAME", "RESULT_NAME", "FitResult", "fit", "fit_in_dir"]

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
CONFIG_NAME = "config.json"
EVENTS_NAME = "events.jsonl"


def fit(cfg: RunConfig, sink: Optional[EventSink] = None, run_dir: Optional[os.PathLike] = None,
        resume: bool = True, device: str = "auto", should_stop: Optional[Callable[[], bool]] = None) -> FitResult:
    """Trains a configuration, emitting events to ``sink``; checkpoints to ``<run_dir>/checkpoint.pt``
    every epoch and resumes from it (``resume=True``). ``should_stop()`` is polled between steps: when
    it returns True a checkpoint is written and the result has status "stopped". A failure emits a
    ``failed`` event with a one-line error, then re-raises."""
    sink = sink if sink is not None else NullSink()
    dist_info = None
    try:
        cfg.validate()
        dev = resolve_device(device if device not in (None, "auto") else cfg.device)
        rd = Path(run_dir) if run_dir is not None else None
        dist_info = dist_setup(dev)  # under torchrun (WORLD_SIZE > 1): DDP, only rank 0 reports
        if dist_info is not None:
            dev = dist_info.device
            if not dist_info.is_main:
                sink = NullSink()
        with deterministic_mode(cfg.deterministic, dev):
            return _fit(cfg, sink, rd, resume, dev, should_stop, dist_info)
    except BaseException as e:
        sink.emit(Event("failed", {"error": error_line(e), "traceback": traceback.format_exc()}))
        raise
    finally:
        if dist_info is not None:
            dist_info.close()


def _fit(cfg: RunConfig, sink: EventSink, run_dir: Optional[Path], resume: bool, device: torch.device,
         should_stop, dist_info=None) -> FitResult:
    run: Trainer
    if dist_info is None:
        run = Trainer(cfg, sink, run_dir, device, should_stop)
    else:
        run = DistributedRun(cfg, sink, run_dir, device, should_stop, dist_info)
    run.build()
    resumed = False
    if resume and run.ck_path is not None and run.ck_path.exists():
        try:
            ck = load_checkpoint(run.ck_path)
        except CtxsimError as e:  # truncated, zero bytes, foreign: say how to go on
            raise CtxsimError(f"{e}; to start this run over, delete it (rm {run.ck_path}) or run it with "
                              "`ctxsim run ... --fresh`") from None
        run.restore(ck)
        resumed = True
    fingerprint = data_fingerprint(run.data, cfg.dataset, getattr(cfg, "val_classes", None))
    if run_dir is not None and (dist_info is None or dist_info.is_main):
        _write_json(run_dir / FINGERPRINT_NAME, fingerprint)
    run.emit("start", config=cfg.to_dict(), run_dir=str(run_dir) if run_dir is not None else None,
             epochs=cfg.epochs, steps_per_epoch=run.steps_per_epoch, start_epoch=run.epoch, device=str(device),
             resumed=resumed, step=run.step, fingerprint=fingerprint)
    if resumed:
        log.info("resumed %s at epoch %d, step %d", run_dir, run.epoch, run.step)
    ck = str(run.ck_path) if run.ck_path is not None and run.ck_path.exists() else None
    for epoch in range(run.epoch, cfg.epochs):
        if not run.train_epoch(epoch):
            ck = run.save("stopped")
            run.emit("stopped", epoch=run.epoch, step=run.step, batch_in_epoch=run.batch_in_epoch, checkpoint=ck)
            return run.result("stopped", ck)
        if run.should_eval():
            run.run_eval()
        ck = run.save("running" if run.epoch < cfg.epochs else "done")
    if run.epoch >= cfg.epochs and not run.history:
        run.run_eval()  # e.g. resumed from a checkpoint written before the final evaluation
    run.run_final_test()  # with val_classes: the test split, once, on the selected model
    result = run.result("done", ck)
    run.emit("done", metrics=result.metrics, selected=cfg.select, best_epoch=result.best_epoch,
             selected_on=result.selected_on, epochs=run.epoch, steps=run.step, seconds=result.seconds,
             per_query=run.per_query_path(), skipped_images=result.skipped_images)
    if run_dir is not None and (dist_info is None or dist_info.is_main):
        _write_json(run_dir / RESULT_NAME, result.to_dict())
    return result


def _write_json(path: Path, obj: Any) -> None:
    import json

    from ctxsim.files import atomic_write

    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)


def fit_in_dir(cfg: RunConfig, run_dir: os.PathLike, sink: Optional[EventSink] = None, device: str = "auto",
               resume: bool = True, should_stop: Optional[Callable[[], bool]] = None) -> FitResult:
    """``fit`` with the run directory's files: config.json, events.jsonl (appended), result.json."""
    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    if not resume:  # a fresh start: the folder's previous run is replaced
        for stale in (CHECKPOINT_NAME, EVENTS_NAME, RESULT_NAME, FINGERPRINT_NAME, PER_QUERY_NAME):
            (rd / stale).unlink(missing_ok=True)
    _write_json(rd / CONFIG_NAME, cfg.to_dict())
    jsonl = JsonlSink(rd / EVENTS_NAME)
    try:
        return fit(cfg, sink=MultiSink(jsonl, sink) if sink is not None else jsonl, run_dir=rd, resume=resume,
                   device=device, should_stop=should_stop)
    finally:
        jsonl.close()
