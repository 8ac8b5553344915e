"""The training loop: one ``Trainer`` for both recipe families and any dataset/loss
(reference-implementation.md §3).

A Trainer holds everything a run's checkpoint must see (model, loss, optimizers, sampler position,
RNG, history, best model); ``ctxsim.train.engine.fit`` drives it epoch by epoch and
``ctxsim.train.distributed.DistributedRun`` extends it for one rank of a data-parallel run. It
reports through events (ctxsim.train.events) to the sink it is given.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ctxsim.errors import ConfigError, CtxsimError, one_line
from ctxsim.eval.per_query import PER_QUERY_NAME, save_per_query
from ctxsim.train.build import build_run, loader_workers
from ctxsim.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    atomic_save,
    from_plain,
    rng_state,
    set_rng_state,
    to_plain,
)
from ctxsim.train.config import RunConfig
from ctxsim.train.evaluation import evaluate_model
from ctxsim.train.events import Event, EventSink
from ctxsim.train.optim import OptimizerSet

# config keys that may change between a checkpoint and its resumption
RESUMABLE_CHANGES = ("epochs", "device", "name", "tags", "num_workers", "root")


@dataclass
class FitResult:
    """What a run ended with. ``metrics`` are those of the selected model (on the test split);
    ``selected_on`` is "test" when a best-of-evaluations model was chosen on the test split (no
    validation split), "val" when on the ``val_classes`` split (then tested once, at the end)."""

    status: str  # "done" | "stopped"
    metrics: dict[str, float]
    selected: str
    selected_on: Optional[str]
    best_epoch: Optional[int]
    epochs_completed: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Optional[str] = None
    checkpoint: Optional[str] = None
    seconds: float = 0.0
    config: Optional[RunConfig] = None
    skipped_images: int = 0  # unreadable images skipped (--skip-bad-images), all splits

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict() if self.config is not None else None
        return d


def project_for_loss(model: torch.nn.Module, emb: torch.Tensor, fp32: bool) -> torch.Tensor:
    """The bottleneck of ``model`` applied to its embedding, inside the caller's autocast, or with
    ``fp32`` in float32 outside it (the 224 code's order; switch ``bottleneck_fp32``, docs/profiles.md)."""
    if not fp32:
        return model.project(emb)
    with torch.autocast(device_type=emb.device.type, enabled=False):
        return model.project(emb.float())


def error_line(e: BaseException) -> str:
    """The one line a ``failed`` event carries: a ctxsim error's message, else ``Type: message``."""
    msg = one_line(e)
    if isinstance(e, CtxsimError) or msg == type(e).__name__:
        return msg
    return f"{type(e).__name__}: {msg}"


def _worker_init(worker_id: int) -> None:
    # numpy is not seeded per worker by torch; derive it from the worker's torch seed
    np.random.seed(torch.initial_seed() % (2**32))


class _ListBatchSampler:
    """Yields a fixed list of batches (an epoch drawn from the run's sampler, possibly resumed)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Trainer:
    """One run's state and its steps (kept together so that checkpointing sees all of it). ``build``,
    then optionally ``restore`` a checkpoint, then ``train_epoch`` / ``run_eval`` / ``save`` as
    ``ctxsim.train.engine.fit`` does; ``result`` is the run's FitResult."""

    def __init__(self, cfg: RunConfig, sink: EventSink, run_dir: Optional[Path], device: torch.device,
                 should_stop: Optional[Callable[[], bool]]) -> None:
        self.cfg = cfg
        self.sink = sink
        self.run_dir = run_dir
        self.ck_path = run_dir / CHECKPOINT_NAME if run_dir is not None else None
        self.device = device
        self.amp = bool(cfg.amp and device.type == "cuda")
        self.should_stop = should_stop
        self.t0 = time.time()
        # progress state
        self.epoch = 0  # completed epochs
        self.step = 0  # global steps done
        self.batch_in_epoch = 0
        self.epoch_batches: Optional[list[list[int]]] = None  # the current epoch's batches (mid-epoch)
        self.sampler_state: Any = None
        self.epoch_loss_sum = 0.0
        self.epoch_loss_n = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": None, "value": None, "metrics": None}
        self.best_model: Optional[dict[str, torch.Tensor]] = None
        self.test_metrics: Optional[dict[str, float]] = None  # with val_classes: the one test evaluation

    def emit(self, kind: str, **data: Any) -> None:
        self.sink.emit(Event(kind, data))

    # -- build ------------------------------------------------------------------------------------
    def build(self) -> None:
        parts = build_run(self.cfg, self.device)
        self.data, self.model, self.loss_fn = parts.data, parts.model, parts.loss_fn
        self.sampler = parts.sampler
        self.opt: OptimizerSet = parts.opt
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.steps_per_epoch = parts.steps_per_epoch

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self, status: str) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "status": status,
            "config": self.cfg.to_dict(),
            "in_channels": int(self.data.in_channels),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_batches": ([torch.as_tensor(b, dtype=torch.long) for b in self.epoch_batches]
                              if self.epoch_batches is not None else None),
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_n": self.epoch_loss_n,
            "model": self.model.state_dict(),
            "best_model": self.best_model,
            "loss": self.loss_fn.state_dict(),
            "optim": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler_state,
            "rng": rng_state(),
            "best": copy.deepcopy(self.best),
            "history": copy.deepcopy(self.history),
            "seconds": time.time() - self.t0,
        }

    def save(self, status: str) -> Optional[str]:
        if self.ck_path is None:
            return None
        atomic_save(self.state(status), self.ck_path)
        self.emit("checkpoint", epoch=self.epoch, path=str(self.ck_path), step=self.step,
                  batch_in_epoch=self.batch_in_epoch)
        return str(self.ck_path)

    def restore(self, ck: dict[str, Any]) -> None:
        old = RunConfig.from_dict(ck["config"])
        if old.config_hash(exclude=RESUMABLE_CHANGES) != self.cfg.config_hash(exclude=RESUMABLE_CHANGES):
            raise ConfigError(
                f"{self.ck_path} belongs to a different configuration; use another run directory or resume=False"
            )
        self.model.load_state_dict(ck["model"])
        self.loss_fn.load_state_dict(ck["loss"])
        self.opt.load_state_dict(ck["optim"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        if ck.get("sampler") is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(from_plain(ck["sampler"]))
        self.sampler_state = ck.get("sampler")
        self.epoch = int(ck["epoch"])
        self.step = int(ck["step"])
        self.batch_in_epoch = int(ck.get("batch_in_epoch", 0))
        eb = ck.get("epoch_batches")
        self.epoch_batches = [b.tolist() for b in eb] if eb is not None else None
        self.epoch_loss_sum = float(ck.get("epoch_loss_sum", 0.0))
        self.epoch_loss_n = int(ck.get("epoch_loss_n", 0))
        self.history = list(ck.get("history", []))
        self.best = dict(ck.get("best", self.best))
        self.best_model = ck.get("best_model")
        self.t0 -= float(ck.get("seconds", 0.0))
        set_rng_state(ck["rng"])

    # -- one epoch --------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self.epoch_batches is not None:  # drawn already (resumed within this epoch)
            return self.epoch_batches
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        batches = [list(map(int, b)) for b in iter(self.sampler)][: self.steps_per_epoch]
        if hasattr(self.sampler, "state_dict"):
            self.sampler_state = to_plain(self.sampler.state_dict())
        self.batch_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_n = 0.0, 0
        return batches

    def train_epoch(self, epoch: int) -> bool:
        """Trains one epoch (from its first unfinished batch). False if stopped by should_stop."""
        cfg = self.cfg
        if cfg.warm > 0:
            self.model.set_warmup(epoch < cfg.warm)  # reference-implementation.md §3.1 warm-up
        self.model.train()
        self.model.apply_bn_mode()  # BN freezing re-applied every epoch (§3.1, §3.2)
        self.loss_fn.train()
        batches = self._epoch_batches(epoch)
        self.epoch_batches = batches
        start = self.batch_in_epoch
        loader = self._train_loader(batches[start:], cfg.seed * 1_000_003 + epoch)
        it = iter(loader)
        t_epoch = time.time()
        t_prev = time.time()
        for _ in range(start, len(batches)):
            if self.should_stop is not None and self.should_stop():
                return False
            images, labels = next(it)
            loss_value, terms = self.train_step(images, labels)
            self.batch_in_epoch += 1
            self.step += 1
            self.epoch_loss_sum += loss_value
            self.epoch_loss_n += 1
            now = time.time()
            ips = images.shape[0] / max(now - t_prev, 1e-9)
            t_prev = now
            self.emit("step", epoch=epoch + 1, step=self.step, loss=loss_value, terms=terms,
                      lr=self.opt.head_lr(), images_per_s=ips)
        del it
        self.opt.schedule_step()  # StepLR / MultiStepLR are stepped per epoch (§3.1, §3.2)
        self.epoch = epoch + 1
        mean = self.epoch_loss_sum / max(self.epoch_loss_n, 1)
        self.emit("epoch", epoch=self.epoch, loss=mean, seconds=time.time() - t_epoch)
        self.batch_in_epoch = 0
        self.epoch_batches = None
        return True

    def _train_loader(self, batches: list[list[int]], seed: int) -> DataLoader:
        """The loader of an epoch's remaining batches (DistributedRun: this rank's shard of each)."""
        if self.cfg.data_kw.get("decode", "cpu") == "gpu":  # data.decode=gpu hook: batched decode on the device
            from ctxsim.data.gpu_decode import check_decode, device_decoded_loader

            check_decode("gpu", self.device)
            return device_decoded_loader(self.data.train, self.device, batch_sampler=_ListBatchSampler(batches),
                                         num_workers=loader_workers(self.cfg.num_workers), worker_init_fn=_worker_init,
                                         generator=torch.Generator().manual_seed(seed))
        return DataLoader(
            self.data.train, batch_sampler=_ListBatchSampler(batches), num_workers=loader_workers(self.cfg.num_workers),
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
            generator=torch.Generator().manual_seed(seed),
        )

    def _embed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss-space outputs (fp32) and labels of the batch the loss sees (DistributedRun: gathered)."""
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = project_for_loss(self.model, self.model(images), self.cfg.bottleneck_fp32)
        return out.float(), labels

    def _after_backward(self) -> None:
        """Hook between backward and the optimizer steps (DistributedRun: averages proxy gradients)."""

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
        cfg = self.cfg
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.opt.zero_grad(accumulate_proxies=cfg.proxy_grad_accumulate)
        out, labels = self._embed(images, labels)
        loss = self.loss_fn(out, labels)  # the loss in fp32, outside autocast (§3.2)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise CtxsimError(f"the loss became {value} at epoch {self.epoch + 1}, step {self.step + 1}; "
                              "try a lower lr (--set lr=...)")
        self.scaler.scale(loss).backward()
        self._after_backward()
        if cfg.clip_grad is not None:
            for o in self.opt.optimizers:
                if _has_grads(o):
                    self.scaler.unscale_(o)
            params = [p for o in self.opt.optimizers for g in o.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        for o in self.opt.optimizers:
            if _has_grads(o):  # e.g. the frozen backbone during warm-up
                self.scaler.step(o)
        self.scaler.update()
        return value, self.loss_fn.last_terms

    # -- evaluation and selection -----------------------------------------------------------------
    def should_eval(self) -> bool:
        e, every = self.epoch, self.cfg.eval_every
        # 224: (epoch+1) % testfreq == 0 or last epoch (§3.1); 256: every 5 epochs + final (§3.2)
        return e == self.cfg.epochs or (every > 0 and e % every == 0)

    def run_eval(self) -> dict[str, float]:
        """Evaluates the model now: on the validation split when the run has one (the test split is
        then evaluated once, by ``run_final_test``), else on the test split; tracks the best."""
        val = getattr(self.data, "val", None)
        if val is not None:
            return self._run_val_eval(val)
        metrics, per_query = evaluate_model(self.model, self.data, self.cfg, self.device,
                                            num_workers=loader_workers(self.cfg.num_workers), per_query=True)
        per_query.epoch = self.epoch
        self.history.append({"epoch": self.epoch, "metrics": metrics})
        self.emit("eval", epoch=self.epoch, metrics=metrics, split="test")
        is_best = self._track_best(metrics)
        if is_best or self.cfg.select != "best":  # per_query.npz holds the selected evaluation
            self._save_per_query(per_query)
        return metrics

    def _track_best(self, metrics: dict[str, float]) -> bool:
        """Updates the best epoch (and, with select=best, keeps its weights); True when this one is it."""
        key = self.cfg.select_metric
        if key not in metrics:
            raise ConfigError(f"select_metric {key} is not among the metrics {', '.join(metrics)}")
        if self.best["value"] is not None and not metrics[key] > self.best["value"]:
            return False
        self.best = {"epoch": self.epoch, "value": metrics[key], "metrics": dict(metrics)}
        if self.cfg.select == "best":
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return True

    def _run_val_eval(self, val) -> dict[str, float]:
        metrics = evaluate_model(self.model, val, self.cfg, self.device, num_workers=loader_workers(self.cfg.num_workers))
        self.history.append({"epoch": self.epoch, "metrics": metrics, "split": "val"})
        self.emit("eval", epoch=self.epoch, metrics=metrics, split="val")
        self._track_best(metrics)
        return metrics

    def run_final_test(self) -> Optional[dict[str, float]]:
        """With a validation split: the test split, evaluated once, at the end, on the selected model
        (the best validation epoch's with select=best, else the last); None without one."""
        if getattr(self.data, "val", None) is None or not self.history:
            return None
        if not getattr(getattr(self, "info", None), "is_main", True):  # DistributedRun: rank 0 tests
            return None
        use_best = self.cfg.select == "best" and self.best_model is not None
        current = None
        if use_best:
            current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.best_model)
        try:
            metrics, per_query = evaluate_model(self.model, self.data, self.cfg, self.device,
                                                num_workers=loader_workers(self.cfg.num_workers), per_query=True)
        finally:
            if current is not None:
                self.model.load_state_dict(current)
        epoch = int(self.best["epoch"]) if use_best else self.epoch
        per_query.epoch = epoch
        self._save_per_query(per_query)
        self.test_metrics = dict(metrics)
        self.history.append({"epoch": epoch, "metrics": dict(metrics), "split": "test"})
        self.emit("eval", epoch=epoch, metrics=metrics, split="test")
        return metrics

    def _save_per_query(self, per_query) -> None:
        """Keeps the per-query results of the evaluation the run's result is selected from."""
        if self.run_dir is not None:
            save_per_query(self.run_dir / PER_QUERY_NAME, per_query)

    def per_query_path(self) -> Optional[str]:
        """The run folder's per-query file of the selected evaluation, if there is one."""
        if self.run_dir is None or not (self.run_dir / PER_QUERY_NAME).is_file():
            return None
        return str((self.run_dir / PER_QUERY_NAME).resolve())

    def selection(self) -> tuple[dict[str, float], Optional[int], Optional[str]]:
        if not self.history:
            return {}, None, None
        if getattr(self.data, "val", None) is not None:  # selected on validation; test metrics once tested
            vals = [h for h in self.history if h.get("split") == "val"]
            best = self.cfg.select == "best" and self.best["metrics"] is not None
            epoch = self.best["epoch"] if best else (vals[-1]["epoch"] if vals else None)
            if self.test_metrics is not None:
                return dict(self.test_metrics), epoch, "val" if best else None
            chosen = self.best["metrics"] if best else (vals[-1]["metrics"] if vals else {})
            return {f"val/{k}": v for k, v in chosen.items()}, epoch, "val" if best else None
        if self.cfg.select == "best" and self.best["metrics"] is not None:
            return dict(self.best["metrics"]), self.best["epoch"], "test"
        last = self.history[-1]
        return dict(last["metrics"]), int(last["epoch"]), None

    def result(self, status: str, checkpoint: Optional[str]) -> FitResult:
        metrics, epoch, on = self.selection()
        return FitResult(status=status, metrics=metrics, selected=self.cfg.select, selected_on=on, best_epoch=epoch,
                         epochs_completed=self.epoch, steps=self.step, history=copy.deepcopy(self.history),
                         run_dir=str(self.run_dir) if self.run_dir is not None else None, checkpoint=checkpoint,
                         seconds=time.time() - self.t0, config=self.cfg, skipped_images=self.skipped_images())

    def skipped_images(self) -> int:
        """Unreadable images skipped so far (``skip_bad_images``), over the train and eval splits."""
        parts = (getattr(self.data, k, None) for k in ("train", "query", "gallery"))
        return sum(int(getattr(d, "bad_image_count", 0) or 0) for d in parts if d is not None)


def _has_grads(opt: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for g in opt.param_groups for p in g["params"])
