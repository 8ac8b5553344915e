"""The training engine: one loop for both recipe families and any dataset/loss (seed-spec §3).

It knows nothing about the registry: it reports through events (ctxsim.train.events) to the sink it
is given, and keeps its state in ``<run_dir>/checkpoint.pt`` so that a run can resume.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ctxsim.errors import ConfigError, CtxsimError
from ctxsim.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    atomic_save,
    from_plain,
    load_checkpoint,
    rng_state,
    set_rng_state,
    to_plain,
)
from ctxsim.train.config import RunConfig
from ctxsim.train.events import Event, EventSink, JsonlSink, MultiSink, NullSink
from ctxsim.train.optim import OptimizerSet, build_optimizers

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
CONFIG_NAME = "config.json"
EVENTS_NAME = "events.jsonl"
# config keys that may change between a checkpoint and its resumption
_RESUMABLE_CHANGES = ("epochs", "device", "name", "tags", "num_workers", "root")


@dataclass
class FitResult:
    """What a run ended with. ``metrics`` are those of the selected model; ``selected_on`` is "test"
    when a best-of-evaluations model was chosen on the test split (no validation split exists)."""

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict() if self.config is not None else None
        return d


# ---- setup helpers ------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is a ConfigError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available (use --device cpu or auto)")
    return dev


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device):
    """Deterministic algorithms (tests, resume checks) for the duration of a run; restores after."""
    prev_alg = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(prev_alg, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def _worker_init(worker_id: int) -> None:
    # numpy is not seeded per worker by torch; derive it from the worker's torch seed
    np.random.seed(torch.initial_seed() % (2**32))


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, CtxsimError):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class _ListBatchSampler:
    """Yields a fixed list of batches (an epoch drawn from the run's sampler, possibly resumed)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def build_run_data(cfg: RunConfig, **extra: Any):
    """The DataBundle of a config (its dataset, root, resolution, transforms options)."""
    from ctxsim.data import build_data

    kw = dict(cfg.data_kw)
    kw.update(extra)
    if cfg.xform_scale is not None:
        kw.setdefault("xform_scale", cfg.xform_scale)
    if cfg.skip_bad_images:
        kw.setdefault("skip_bad_images", True)
    return build_data(cfg.dataset, root=cfg.root, resolution=cfg.resolution, **kw)


def build_run_model(cfg: RunConfig, in_channels: int):
    """The model a config describes, with its backbone weights (seed-spec §3.1, §3.2 networks)."""
    from ctxsim.models import build_model

    m = cfg.model
    return build_model(arch=m.arch, pooling=m.pooling, layernorm=m.layernorm, embedding_size=m.embedding_size,
                       bottleneck=m.bottleneck, bottleneck_size=m.bottleneck_size,
                       backbone_weights=m.backbone_weights, bn_mode=m.bn_mode, in_channels=in_channels,
                       embedding_init=m.embedding_init)


def build_run_loss(cfg: RunConfig, data):
    """The loss a config describes; proxy losses get the number of training classes (or, with the
    reference's bug flag, one proxy per training image: seed-spec §2.1)."""
    from ctxsim.losses import build_loss

    kw: dict[str, Any] = dict(cfg.loss_kw)
    kw.update(num_classes=int(data.num_classes), embedding_size=cfg.model.loss_dim(), convention=cfg.convention)
    if cfg.proxies_per_image:
        if cfg.loss not in ("proxy_anchor", "proxy_nca"):
            raise ConfigError("proxies_per_image applies to proxy_anchor and proxy_nca only")
        kw.update(proxies_per_image=True, num_train_images=int(len(data.train_labels)))
    try:
        return build_loss(cfg.loss, **kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def build_run_sampler(cfg: RunConfig, data):
    """The batch sampler of a config (seed-spec §3.1 / §3.2 / §3.3 samplers)."""
    from ctxsim.data import build_batch_sampler

    try:
        return build_batch_sampler(cfg.sampler, data.train_labels, cfg.batch_size,
                                   samples_per_class=cfg.samples_per_class, super_labels=data.train_super_labels,
                                   seed=cfg.seed, **cfg.sampler_kw)
    except (TypeError,) as e:
        raise ConfigError(f"sampler {cfg.sampler}: {str(e).splitlines()[0]}") from None


def evaluate(model: torch.nn.Module, data, device: torch.device | str = "cpu", ks=None, batch_size: int = 128,
             num_workers: int = 0, amp: bool = False, progress: Optional[Callable[[int, int], None]] = None,
             return_embeddings: bool = False):
    """R@K (the dataset's K list unless ``ks``), MAP@R and RP of a model on the dataset's test split
    (query vs itself with self excluded, or query vs gallery). With ``return_embeddings`` also returns
    ``(q_emb, q_labels, g_emb, g_labels)``."""
    from ctxsim.eval import extract_embeddings, retrieval_metrics

    device = torch.device(device)

    def loader(ds):
        return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                          pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))

    was_training = model.training
    model.eval()
    try:
        q, qy = extract_embeddings(model, loader(data.query), device=str(device), progress=progress, amp=amp)
        g = gy = None
        if data.gallery is not None:
            g, gy = extract_embeddings(model, loader(data.gallery), device=str(device), progress=progress, amp=amp)
    finally:
        model.train(was_training)
    metrics = retrieval_metrics(q, qy, g, gy, ks=tuple(ks or data.ks), map_at_r=True)
    metrics = {k: float(v) for k, v in metrics.items()}
    if return_embeddings:
        return metrics, (q, qy, g, gy)
    return metrics


# ---- the loop -----------------------------------------------------------------------------------
class _Run:
    """State of one run (kept together so that checkpointing sees all of it)."""

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

    def emit(self, kind: str, **data: Any) -> None:
        self.sink.emit(Event(kind, data))

    # -- build ------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.data = build_run_data(cfg)
        self.model = build_run_model(cfg, self.data.in_channels).to(self.device)
        self.loss_fn = build_run_loss(cfg, self.data).to(self.device)
        self.sampler = build_run_sampler(cfg, self.data)
        self.opt: OptimizerSet = build_optimizers(cfg, self.model, self.loss_fn)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        n = len(self.sampler)
        if cfg.max_steps_per_epoch is not None:
            n = min(n, cfg.max_steps_per_epoch)
        if n <= 0:
            raise ConfigError(f"the {cfg.sampler} sampler yields no batch of {cfg.batch_size} from this training set")
        self.steps_per_epoch = n

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
        if old.config_hash(exclude=_RESUMABLE_CHANGES) != self.cfg.config_hash(exclude=_RESUMABLE_CHANGES):
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
            self.model.set_warmup(epoch < cfg.warm)  # seed-spec §3.1 warm-up
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
        return DataLoader(
            self.data.train, batch_sampler=_ListBatchSampler(batches), num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
            generator=torch.Generator().manual_seed(seed),
        )

    def _embed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss-space outputs (fp32) and labels of the batch the loss sees (DistributedRun: gathered)."""
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model.project(self.model(images))
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
        metrics = evaluate(self.model, self.data, self.device, ks=self.cfg.ks, batch_size=self.cfg.eval_batch_size,
                           num_workers=self.cfg.num_workers, amp=self.amp)
        self.history.append({"epoch": self.epoch, "metrics": metrics})
        self.emit("eval", epoch=self.epoch, metrics=metrics, split="test")
        key = self.cfg.select_metric
        if key not in metrics:
            raise ConfigError(f"select_metric {key} is not among the metrics {', '.join(metrics)}")
        if self.best["value"] is None or metrics[key] > self.best["value"]:
            self.best = {"epoch": self.epoch, "value": metrics[key], "metrics": dict(metrics)}
            if self.cfg.select == "best":
                self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return metrics

    def selection(self) -> tuple[dict[str, float], Optional[int], Optional[str]]:
        if not self.history:
            return {}, None, None
        if self.cfg.select == "best" and self.best["metrics"] is not None:
            return dict(self.best["metrics"]), self.best["epoch"], "test"
        last = self.history[-1]
        return dict(last["metrics"]), int(last["epoch"]), None

    def result(self, status: str, checkpoint: Optional[str]) -> FitResult:
        metrics, epoch, on = self.selection()
        return FitResult(status=status, metrics=metrics, selected=self.cfg.select, selected_on=on, best_epoch=epoch,
                         epochs_completed=self.epoch, steps=self.step, history=copy.deepcopy(self.history),
                         run_dir=str(self.run_dir) if self.run_dir is not None else None, checkpoint=checkpoint,
                         seconds=time.time() - self.t0, config=self.cfg)


def _has_grads(opt: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for g in opt.param_groups for p in g["params"])


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
        from ctxsim.train.distributed import setup as dist_setup

        dist_info = dist_setup(dev)  # under torchrun (WORLD_SIZE > 1): DDP, only rank 0 reports
        if dist_info is not None:
            dev = dist_info.device
            if not dist_info.is_main:
                sink = NullSink()
        with deterministic_mode(cfg.deterministic, dev):
            return _fit(cfg, sink, rd, resume, dev, should_stop, dist_info)
    except BaseException as e:
        sink.emit(Event("failed", {"error": _one_line(e), "traceback": traceback.format_exc()}))
        raise
    finally:
        if dist_info is not None:
            dist_info.close()


def _fit(cfg: RunConfig, sink: EventSink, run_dir: Optional[Path], resume: bool, device: torch.device,
         should_stop, dist_info=None) -> FitResult:
    if dist_info is None:
        run = _Run(cfg, sink, run_dir, device, should_stop)
    else:
        from ctxsim.train.distributed import DistributedRun

        run = DistributedRun(cfg, sink, run_dir, device, should_stop, dist_info)
    run.build()
    resumed = False
    if resume and run.ck_path is not None and run.ck_path.exists():
        run.restore(load_checkpoint(run.ck_path))
        resumed = True
    run.emit("start", config=cfg.to_dict(), run_dir=str(run_dir) if run_dir is not None else None,
             epochs=cfg.epochs, steps_per_epoch=run.steps_per_epoch, start_epoch=run.epoch, device=str(device),
             resumed=resumed, step=run.step)
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
    result = run.result("done", ck)
    run.emit("done", metrics=result.metrics, selected=cfg.select, best_epoch=result.best_epoch,
             selected_on=result.selected_on, epochs=run.epoch, steps=run.step, seconds=result.seconds)
    if run_dir is not None and (dist_info is None or dist_info.is_main):
        _write_json(run_dir / RESULT_NAME, result.to_dict())
    return result


def _write_json(path: Path, obj: Any) -> None:
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=str)
    os.replace(tmp, path)


def default_run_dir(cfg: RunConfig, base: os.PathLike = "runs") -> Path:
    """``runs/<name or dataset-loss-resolution>-<config hash[:8]>``."""
    stem = cfg.name or f"{cfg.dataset}-{cfg.loss}-{cfg.resolution}"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return Path(base) / f"{stem}-{cfg.config_hash()[:8]}"


def run_foreground(cfg: RunConfig, run_dir: os.PathLike, sink: Optional[EventSink] = None, device: str = "auto",
                   resume: bool = True, should_stop: Optional[Callable[[], bool]] = None) -> FitResult:
    """``fit`` with the run directory's files: config.json, events.jsonl (appended), result.json."""
    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    if not resume:  # a fresh start: the folder's previous run is replaced
        for stale in (CHECKPOINT_NAME, EVENTS_NAME, RESULT_NAME):
            (rd / stale).unlink(missing_ok=True)
    _write_json(rd / CONFIG_NAME, cfg.to_dict())
    jsonl = JsonlSink(rd / EVENTS_NAME)
    try:
        return fit(cfg, sink=MultiSink(jsonl, sink) if sink is not None else jsonl, run_dir=rd, resume=resume,
                   device=device, should_stop=should_stop)
    finally:
        jsonl.close()
