"""GPU check (issue 17): one unattended run (< 8 minutes, no network) that measures, in the same process
and on the same generated data, everything the GPU targets need, and writes them to
``gpu-<date>.md`` (in $OUT when set, else benchmarks/results/):

* input pipeline: AMP training of the 224 and 256 ResNet-50 recipes (cub/hybrid) through ctxsim's
  Trainer and its own train loader, at the recipe batch size with one worker per CPU core, on
  generated full-size JPEGs, with ``data.decode=cpu`` and ``data.decode=gpu``: images/s, peak GPU
  memory, data-loader stall share, measured and in steady state (the loader timed alone; target < 5%);
* training step: ctxsim's ``Trainer.train_step`` vs a plain PyTorch loop (same model, batch, AMP,
  channels_last, same preloaded batches): images/s and their ratio (target >= 0.95);
* fp16 vs bf16 AMP, channels_last on/off, torch.compile on/off (plain loop): images/s, and one step's
  loss and gradients against an fp32 step from the same weights; a variant is "equivalent" when its
  error is at most twice the current setting's (fp16, contiguous, eager) or below 1e-3;
* exact k-NN evaluation at iNat size (250k x 512) through ctxsim.eval vs a bare torch (matmul + topk)
  and a bare faiss-gpu search of the same size (target within 2x);
* the CUDA-only pytest tests.

Random backbone weights (nothing downloaded): the speed of a step does not depend on the weights.

    python benchmarks/gpu_check.py                 # the real check (needs CUDA)
    python benchmarks/gpu_check.py --cpu-tiny      # dry run on CPU with tiny sizes (tests, CI)
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")
TARGETS = {"step_ratio": 0.95, "stall": 0.05, "knn_ratio": 2.0}


def make_cub_like(root: Path, classes: int, per_class: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A CUB_200_2011-layout folder of random-content JPEGs (smooth colour fields + noise, so JPEG
    decoding costs what photographs cost) with its own split files: train = the first half of the
    classes, test = the second half."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ddir = root / "CUB_200_2011"
    w, h = size
    lines = {"train": ["image_id class_id super_class_id path"], "test": ["image_id class_id super_class_id path"]}
    n = 0
    for c in range(1, classes + 1):
        cdir = ddir / "images" / f"{c:03d}.class{c}"
        cdir.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        coarse = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR), dtype=np.int16)
        for i in range(per_class):
            img = np.clip(coarse + rng.integers(-40, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
            rel = f"images/{c:03d}.class{c}/img_{i}.jpg"
            Image.fromarray(img).save(ddir / rel, quality=90)
            split = "train" if c <= classes // 2 else "test"
            lines[split].append(f"{n} {c} 1 {rel}")
            n += 1
    for split, ls in lines.items():
        (ddir / f"cub200_{split}.txt").write_text("\n".join(ls) + "\n")
    return ddir


# ---- helpers -------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else NAN


def _error_row(what: str, e: BaseException) -> dict:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {"what": what, "error": f"{type(e).__name__}: {msg}" if msg else type(e).__name__}


def bench_config(resolution: int, root: Path, device: torch.device, tiny: bool, workers: int, decode: str = "cpu"):
    """recipe(cub, hybrid, resolution) on the generated images (random init, one worker per core)."""
    from ctxsim.train import recipe

    cfg = recipe("cub", "hybrid", resolution).with_overrides(
        root=str(root), device=device.type, model={"backbone_weights": None}, epochs=1, num_workers=workers)
    if tiny:
        cfg = cfg.with_overrides(batch_size=8, model={"arch": "tiny", "backbone_weights": None})
    # balanced224 hard-codes 96 classes per round; the generated set has fewer train classes
    cfg = cfg.with_overrides(sampler="m_per_class", sampler_kw={})
    return cfg.with_sets([f"data.decode={decode}"])


def build_trainer(cfg, device: torch.device):
    from ctxsim.train import Trainer
    from ctxsim.train.events import NullSink

    run = Trainer(cfg, NullSink(), None, device, None)
    run.build()
    run.model.train()
    run.model.apply_bn_mode()
    run.loss_fn.train()
    return run


def _batches(run, total: int) -> list[list[int]]:
    out: list[list[int]] = []
    epoch = 0
    while len(out) < total:
        run.sampler.set_epoch(epoch)
        out += [list(map(int, b)) for b in run.sampler]
        epoch += 1
    return out[:total]


# ---- 1. input pipeline: the Trainer's loader + train_step ---------------------------------------
def pipeline_bench(resolution: int, decode: str, root: Path, device: torch.device, steps: int, warmup: int,
                   tiny: bool, workers: int) -> dict:
    """Times the Trainer's own loader (``_train_loader``) feeding ``train_step``. Measured stall = time
    waiting for the next batch (decode on the device included with decode=gpu) / wall time. A short run
    hides a slow loader behind the batches its workers prefetched, so the loader is also timed alone
    (after its first wave of batches) and the steady-state stall is max(measured, 1 - loader rate /
    step rate); the target applies to that."""
    cfg = bench_config(resolution, root, device, tiny, workers, decode)
    run = build_trainer(cfg, device)

    def loader_of(batches):
        if decode == "gpu" and device.type != "cuda":  # the dry run (no workers): the device path on the CPU
            from ctxsim.data.gpu_decode import device_decoded_loader

            return device_decoded_loader(run.data.train, device, batch_sampler=batches, num_workers=cfg.num_workers,
                                         generator=torch.Generator().manual_seed(0))
        return run._train_loader(batches, 0)

    # the loader alone: batches per second from the end of the first wave (one batch per worker) on
    wave = max(cfg.num_workers, 1)
    n_alone = 4 * wave
    marks = []
    for _images, _ in loader_of(_batches(run, n_alone)):
        _sync(device)
        marks.append(time.perf_counter())
    loader_ips = (n_alone - wave) * cfg.batch_size / max(marks[-1] - marks[wave - 1], 1e-9)

    _reset_peak(device)
    total = warmup + steps
    wait = compute = 0.0
    n_img = 0
    it = iter(loader_of(_batches(run, total)))
    for i in range(total):
        t0 = time.perf_counter()
        images, labels = next(it)
        _sync(device)
        t1 = time.perf_counter()
        run.train_step(images, labels)
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            wait += t1 - t0
            compute += t2 - t1
            n_img += images.shape[0]
    del it
    stall = wait / (wait + compute)
    step_ips = n_img / compute
    steady = max(stall, 1.0 - loader_ips / step_ips)
    return {"what": f"train {resolution} cub/hybrid decode={decode}", "batch": cfg.batch_size, "n": steps,
            "seconds": wait + compute, "per_s": n_img / (wait + compute), "unit": "img/s", "peak_gib": _peak(device),
            "stall": stall, "stall_ss": steady,
            "note": f"{cfg.model.arch}, AMP={run.amp}, {cfg.num_workers} workers; loader alone {loader_ips:.0f} img/s, "
                    f"steps alone {step_ips:.0f} img/s: steady-state stall {100 * steady:.1f}%"}


# ---- 2. the training step: ctxsim vs a plain loop -----------------------------------------------
def preload(run, device: torch.device, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n distinct batches of the run's data (CPU pipeline), kept on the device."""
    from torch.utils.data import DataLoader

    loader = DataLoader(run.data.train, batch_sampler=_batches(run, n), num_workers=run.cfg.num_workers)
    return [(x.to(device), y.to(device)) for x, y in loader]


class PlainLoop:
    """The plain PyTorch loop: autocast + GradScaler + one Adam over model and loss parameters."""

    def __init__(self, model, loss_fn, device: torch.device, dtype=torch.float16, channels_last: bool = True,
                 compile=False, lr: float = 1e-5):
        self.model, self.loss_fn, self.device = model, loss_fn, device
        self.amp = device.type == "cuda"
        self.dtype, self.channels_last = dtype, channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        params = list(model.parameters()) + list(loss_fn.parameters())
        self.opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and dtype == torch.float16)
        fwd = self._forward
        self.fwd = torch.compile(fwd, backend=compile) if compile else fwd  # compile: a backend name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.amp):
            return self.model.project(self.model(x))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.fwd(self._input(x)).float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach()

    def grads_of_one_step(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> tuple[float, torch.Tensor]:
        """(loss, flat gradients) of one forward/backward (no optimizer step), fp32 gradients."""
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.fwd(self._input(x)).float(), y)
        (loss * scale).backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        flat = torch.cat([(p.grad.float() / scale).flatten() if p.grad is not None
                          else torch.zeros(p.numel(), device=p.device) for p in params])
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), flat


def _time_steps(step, batches, steps: int, warmup: int, device: torch.device) -> tuple[float, int]:
    for i in range(warmup):
        step(*batches[i % len(batches)])
    _sync(device)
    t = time.perf_counter()
    n = 0
    for i in range(steps):
        x, y = batches[i % len(batches)]
        step(x, y)
        n += x.shape[0]
    _sync(device)
    return time.perf_counter() - t, n


EAGER_VARIANTS = [("fp16", torch.float16, True, False), ("fp16", torch.float16, False, False),
                  ("bf16", torch.bfloat16, True, False)]
COMPILE_VARIANTS = [("fp16", torch.float16, False, False), ("fp16", torch.float16, True, True)]


def step_bench(resolution: int, root: Path, device: torch.device, steps: int, warmup: int, tiny: bool, workers: int,
               variants=EAGER_VARIANTS, with_ctxsim: bool = True) -> list[dict]:
    """ctxsim's train_step vs the plain loop on the same preloaded batches, then the plain loop's
    variants (name, dtype, channels_last, compile) with a one-step equivalence check against fp32."""
    cfg = bench_config(resolution, root, device, tiny, workers)
    run = build_trainer(cfg, device)
    init_model = copy.deepcopy(run.model.state_dict())
    init_loss = copy.deepcopy(run.loss_fn.state_dict())
    base_model, base_loss = copy.deepcopy(run.model), copy.deepcopy(run.loss_fn)
    batches = preload(run, device, min(8, steps + warmup))
    rows = []
    ctx = None
    if with_ctxsim:
        _reset_peak(device)
        dt, n = _time_steps(run.train_step, batches, steps, warmup, device)
        ctx = {"what": f"step {resolution} ctxsim Trainer.train_step", "batch": cfg.batch_size, "n": steps,
               "seconds": dt, "per_s": n / dt, "unit": "img/s", "peak_gib": _peak(device), "stall": NAN,
               "note": f"fp16 AMP={run.amp}, contiguous, eager"}
        rows.append(ctx)
    del run

    def fresh(**kw) -> PlainLoop:
        m, lf = copy.deepcopy(base_model), copy.deepcopy(base_loss)
        m.train()
        m.apply_bn_mode()
        lf.train()
        return PlainLoop(m, lf, device, **kw)

    # fp32 reference gradients of one step from the initial weights (the equivalence yardstick)
    ref = fresh(dtype=torch.float32, channels_last=False)
    ref.amp = False
    x0, y0 = batches[0]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a true fp32 yardstick
    try:
        ref_loss, ref_grad = ref.grads_of_one_step(x0, y0, 1.0)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    del ref
    errs: dict[str, tuple[float, float]] = {}
    for name, dtype, cl, comp in variants:
        label = f"{name}, {'channels_last' if cl else 'contiguous'}, {'compile' if comp else 'eager'}"
        what = ("plain" if (name, cl, comp) == ("fp16", True, False) else "variant")
        what = f"step {resolution} {what} loop ({label})"
        try:
            loop = fresh(dtype=dtype, channels_last=cl, compile=comp and ("eager" if tiny else "inductor"))
            t_first = time.perf_counter()
            scale = 1024.0 if (dtype == torch.float16 and loop.amp) else 1.0
            loss_v, grad_v = loop.grads_of_one_step(x0, y0, scale)  # also compiles (first call)
            _sync(device)
            first_s = time.perf_counter() - t_first
            loop.model.load_state_dict(init_model)
            loop.loss_fn.load_state_dict(init_loss)
            loss_err = abs(loss_v - ref_loss) / max(abs(ref_loss), 1e-12)
            grad_err = float((grad_v - ref_grad).norm() / ref_grad.norm().clamp_min(1e-12))
            errs[label] = (loss_err, grad_err)
            _reset_peak(device)
            dt, n = _time_steps(loop.step, batches, steps, warmup, device)
            note = f"vs fp32: loss {loss_err:.1e}, grad {grad_err:.1e}"
            if comp:
                note += f"; first step {first_s:.0f}s"
            rows.append({"what": what, "batch": cfg.batch_size, "n": steps, "seconds": dt, "per_s": n / dt,
                         "unit": "img/s", "peak_gib": _peak(device), "stall": NAN, "note": note,
                         "variant": label, "loss_err": loss_err, "grad_err": grad_err})
            del loop
        except Exception as e:  # a variant that fails (e.g. no compiler) is reported, the rest still run
            rows.append(_error_row(what, e))
    # equivalence: no worse than twice the current setting's error (fp16, contiguous, eager), or < 1e-3
    base = errs.get("fp16, contiguous, eager")
    for r in rows:
        if "variant" in r and base is not None:
            ok = all(v <= max(2 * b, 1e-3) for v, b in zip((r["loss_err"], r["grad_err"]), base))
            r["equivalent"] = ok
            r["note"] += "; equivalent" if ok else "; NOT equivalent"
    plain = next((r for r in rows if r.get("variant") == "fp16, channels_last, eager"), None)
    if plain is not None and ctx is not None:
        ratio = ctx["per_s"] / plain["per_s"]
        rows.append({"what": f"step {resolution} ratio ctxsim / plain loop", "batch": cfg.batch_size, "n": steps,
                     "seconds": NAN, "per_s": ratio, "unit": "x", "peak_gib": NAN, "stall": NAN,
                     "note": f"target >= {TARGETS['step_ratio']}", "target": "step_ratio", "value": ratio})
    contig = next((r for r in rows if r.get("variant") == "fp16, contiguous, eager"), None)
    if contig is not None and ctx is not None:  # the loop's own overhead, memory format aside
        rows.append({"what": f"step {resolution} ratio ctxsim / plain loop (contiguous)", "batch": cfg.batch_size,
                     "n": steps, "seconds": NAN, "per_s": ctx["per_s"] / contig["per_s"], "unit": "x",
                     "peak_gib": NAN, "stall": NAN, "note": "same memory format: the loop's overhead alone"})
    return rows


# ---- 3. exact k-NN at iNat size -----------------------------------------------------------------
def knn_bench(n: int, dim: int, per_class: int, device: torch.device, ks=(1, 4, 16, 32)) -> list[dict]:
    """ctxsim.eval.retrieval_metrics (R@K + MAP@R, query == gallery) vs a bare search of the same size
    and depth (k = per-class count + 1: what MAP@R needs, self included)."""
    from ctxsim.eval import retrieval_metrics
    from ctxsim.eval.knn import faiss_gpu_available

    g = torch.Generator(device="cpu").manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    labels = (torch.arange(n) // per_class).to(device)
    k = max(max(ks), per_class) + 1
    rows = []

    def timed(fn) -> tuple[float, object]:
        _reset_peak(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        return time.perf_counter() - t, out

    retrieval_metrics(emb[:1000], labels[:1000], ks=ks, map_at_r=True)  # CUDA/cuBLAS start-up, untimed
    (emb[:1000] @ emb[:1000].T).topk(k, dim=1)
    dt, m = timed(lambda: retrieval_metrics(emb, labels, ks=ks, map_at_r=True))
    rows.append({"what": f"k-NN ctxsim.eval {n}x{dim} R@{','.join(map(str, ks))} + MAP@R", "batch": "-", "n": n,
                 "seconds": dt, "per_s": n / dt, "unit": "queries/s", "peak_gib": _peak(device), "stall": NAN,
                 "note": f"R@1 {m['R@1']:.4f}, MAP@R {m['MAP@R']:.4f}"})
    ctx_s = dt

    def bare_torch():
        chunk = 4096 if device.type == "cuda" else 512
        idx = torch.empty(n, k, dtype=torch.long, device=device)
        for i in range(0, n, chunk):
            idx[i:i + chunk] = (emb[i:i + chunk] @ emb.T).topk(k, dim=1).indices
        return idx

    bare = []
    dt, _ = timed(bare_torch)
    bare.append(dt)
    rows.append({"what": f"k-NN bare torch mm+topk {n}x{dim} k={k}", "batch": "-", "n": n, "seconds": dt,
                 "per_s": n / dt, "unit": "queries/s", "peak_gib": _peak(device), "stall": NAN, "note": "fp32"})
    if device.type == "cuda" and faiss_gpu_available():
        import faiss

        def bare_faiss():
            res = faiss.StandardGpuResources()
            index = faiss.GpuIndexFlatIP(res, dim)
            x = emb.float().cpu().numpy()
            index.add(x)
            return index.search(x, k)

        dt, _ = timed(bare_faiss)
        bare.append(dt)
        rows.append({"what": f"k-NN bare faiss-gpu IndexFlatIP {n}x{dim} k={k}", "batch": "-", "n": n,
                     "seconds": dt, "per_s": n / dt, "unit": "queries/s", "peak_gib": NAN, "stall": NAN,
                     "note": "host arrays in and out"})
    else:
        rows.append({"what": "k-NN bare faiss-gpu", "batch": "-", "n": n, "seconds": NAN, "per_s": NAN,
                     "unit": "-", "peak_gib": NAN, "stall": NAN, "note": "skipped: no faiss GPU support here"})
    ratio = ctx_s / min(bare)
    rows.append({"what": "k-NN ratio ctxsim / fastest bare search", "batch": "-", "n": n, "seconds": NAN,
                 "per_s": ratio, "unit": "x", "peak_gib": NAN, "stall": NAN,
                 "note": f"target <= {TARGETS['knn_ratio']}", "target": "knn_ratio", "value": ratio})
    return rows


# ---- 4. the CUDA-only tests ---------------------------------------------------------------------
def cuda_tests(tiny: bool, timeout: int) -> tuple[dict, str]:
    """Runs the tests whose names say cuda (the skipif-CUDA ones); the dry run only collects one file."""
    target = ["tests/test_data_gpu_decode.py"] if tiny else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-k", "cuda", *target]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), 124
    dt = time.perf_counter() - t
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out)}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or f"exit {rc}"
    row = {"what": "CUDA tests (pytest -k cuda)", "batch": "-", "n": counts.get("passed", 0), "seconds": dt,
           "per_s": NAN, "unit": "-", "peak_gib": NAN, "stall": NAN, "note": summary}
    if rc not in (0, 5) or counts.get("failed") or counts.get("error") or counts.get("errors"):
        row["error"] = f"pytest exit {rc}: {summary}"
    return row, " ".join(cmd[2:]) + "\n" + out[-6000:]


# ---- report ---------------------------------------------------------------------------------------
def environment(device: torch.device, workers: int) -> dict:
    env = {"date (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "python": platform.python_version(), "torch": torch.__version__,
           "CUDA (torch build)": torch.version.cuda or "-", "cuDNN": str(torch.backends.cudnn.version() or "-"),
           "CPU cores": str(os.cpu_count()), "loader workers": str(workers)}
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        env["faiss"] = f"{faiss.__version__} (GPUs visible to faiss: {gpus})"
    except ImportError:
        env["faiss"] = "not installed"
    if device.type == "cuda":
        env["GPU"] = torch.cuda.get_device_name(0)
        env["GPU memory"] = f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"
        try:
            import pynvml

            pynvml.nvmlInit()
            drv = pynvml.nvmlSystemGetDriverVersion()
            env["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
        except Exception:
            try:
                env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=20).stdout.strip() or "?"
            except (OSError, subprocess.SubprocessError):
                env["driver"] = "?"
    else:
        env["GPU"] = "none (CPU dry run: the figures mean nothing)"
    return env


def _cells(r: dict) -> list[str]:
    if "error" in r:
        return [r["what"], "-", "-", "-", "-", "-", "-", "FAILED: " + r["error"]]
    stall = "-" if r["stall"] != r["stall"] else f"{100 * r['stall']:.1f}%"
    peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"
    secs = "-" if r["seconds"] != r["seconds"] else f"{r['seconds']:.2f}"
    if r["per_s"] != r["per_s"]:
        tp = "-"
    elif r["unit"] == "x":
        tp = f"{r['per_s']:.3f}x"
    else:
        tp = f"{r['per_s']:.0f} {r['unit']}"
    return [r["what"], str(r["batch"]), str(r["n"]), secs, tp, peak, stall, r.get("note", "")]


HEAD = ["measurement", "batch", "n", "seconds", "throughput", "peak GiB", "stall", "note"]


def target_rows(sections: dict[str, list[dict]]) -> list[list[str]]:
    out = []
    for rows in sections.values():
        for r in rows:
            if r.get("target") == "step_ratio":
                out.append([r["what"], f">= {TARGETS['step_ratio']}", f"{r['value']:.3f}",
                            "met" if r["value"] >= TARGETS["step_ratio"] else "MISSED"])
            elif r.get("target") == "knn_ratio":
                out.append([r["what"], f"<= {TARGETS['knn_ratio']}", f"{r['value']:.2f}",
                            "met" if r["value"] <= TARGETS["knn_ratio"] else "MISSED"])
            elif r["what"].startswith("train ") and "error" not in r:
                out.append([f"loader stall (steady state), {r['what']}", f"< {100 * TARGETS['stall']:.0f}%",
                            f"{100 * r['stall_ss']:.1f}%", "met" if r["stall_ss"] < TARGETS["stall"] else "MISSED"])
            elif r["what"].startswith("CUDA tests"):
                out.append([r["what"], "all pass", r.get("note", r.get("error", "")),
                            "FAILED" if "error" in r else "met"])
            elif "equivalent" in r and r["variant"] != "fp16, contiguous, eager":
                out.append([f"equivalence, {r['what']}", "<= 2x fp16-eager error", f"{r['grad_err']:.1e}",
                            "met" if r["equivalent"] else "MISSED"])
    return out


def write_markdown(path: Path, env: dict, sections: dict[str, list[dict]], tests_log: str, done: bool) -> None:
    """The results file, written atomically (after every section, so a timeout leaves what ran)."""
    lines = [f"# ctxsim GPU check {env['date (UTC)'][:10]}", ""]
    if not done:
        lines += ["**Incomplete: the run stopped before the last section.**", ""]
    lines += ["Written by `bash benchmarks/gpu_check.sh` (benchmarks/gpu_check.py; issue 17).", "",
              "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    tg = target_rows(sections)
    if tg:
        lines += ["", "## Targets", "", "| what | target | measured | |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(c) + " |" for c in tg]
    for title, rows in sections.items():
        lines += ["", f"## {title}", "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    if tests_log:
        lines += ["", "## CUDA tests output", "", "```", tests_log.rstrip(), "```"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def print_table(sections: dict[str, list[dict]], env: dict) -> None:
    print(f"\nctxsim GPU check on {env['GPU']} (torch {env['torch']}, CUDA {env['CUDA (torch build)']}, "
          f"driver {env.get('driver', '-')})")
    widths = [62, 5, 7, 8, 18, 8, 6]
    head = " ".join(f"{h:{'<' if i == 0 else '>'}{w}}" for i, (h, w) in enumerate(zip(HEAD, widths))) + "  note"
    for title, rows in sections.items():
        print(f"\n{title}\n{head}\n{'-' * len(head)}")
        for r in rows:
            c = _cells(r)
            if "error" in r:
                print(f"{c[0]:62} {c[-1]}")
                continue
            cols = " ".join(f"{v:{'<' if i == 0 else '>'}{w}}" for i, (v, w) in enumerate(zip(c, widths)))
            print(cols + "  " + c[-1])
    for t in target_rows(sections):
        print(f"target: {t[0]}: {t[2]} (target {t[1]}) {t[3]}")


def results_path(out: str | None, tiny: bool) -> Path:
    default = Path(tempfile.gettempdir()) if tiny else ROOT / "benchmarks" / "results"  # dry runs stay out of git
    base = Path(out) if out else (Path(os.environ["OUT"]) if os.environ.get("OUT") else default)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    return base / (f"gpu-{date}-cpu-tiny.md" if tiny else f"gpu-{date}.md")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-tiny", "--dry-run", dest="tiny", action="store_true",
                    help="tiny sizes on CPU (checks the script, measures nothing meaningful)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotune, workers)")
    ap.add_argument("--classes", type=int, default=64, help="generated classes (half train, half test)")
    ap.add_argument("--per-class", type=int, default=12, help="generated images per class")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="loader workers (default: CPU cores)")
    ap.add_argument("--knn-n", type=int, default=250_000, help="k-NN size (iNat test: 249,850)")
    ap.add_argument("--knn-dim", type=int, default=512)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (the slowest part)")
    ap.add_argument("--no-tests", action="store_true", help="skip the CUDA pytest run")
    ap.add_argument("--tests-timeout", type=int, default=150, help="seconds for the CUDA pytest run")
    ap.add_argument("--out", default=None, help="folder for gpu-<date>.md (default: $OUT, else benchmarks/results)")
    ap.add_argument("--workdir", default=None, help="where to write the generated JPEGs (default: a temp dir)")
    args = ap.parse_args(argv)

    if args.tiny:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        args.steps, args.warmup, args.classes, args.per_class = 1, 1, 8, 4
        args.knn_n, args.knn_dim, args.workers = 2000, 64, 0
        size = (80, 60)
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --cpu-tiny for a dry run)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # as fit() sets it on CUDA (non-deterministic runs)
        size = (500, 375)  # CUB's typical image size
    os.environ.setdefault("CTXSIM_OFFLINE", "1")
    path = results_path(args.out, args.tiny)
    env = environment(device, args.workers)
    sections: dict[str, list[dict]] = {}
    tests_log = ""
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ctxsim-gpucheck-"))

    def section(title: str, fn, what: str) -> None:
        rows = sections.setdefault(title, [])
        t = time.perf_counter()
        try:
            out = fn()
            rows.extend(out if isinstance(out, list) else [out])
        except Exception as e:  # report and go on: the table is the output
            rows.append(_error_row(what, e))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"[{time.perf_counter() - t:5.1f}s] {what}", file=sys.stderr)
        write_markdown(path, env, sections, tests_log, done=False)

    interrupted = False
    try:
        t = time.perf_counter()
        make_cub_like(work, args.classes, args.per_class, size)
        print(f"generated {args.classes * args.per_class} JPEGs {size[0]}x{size[1]} in {time.perf_counter() - t:.1f}s",
              file=sys.stderr)
        s_in = f"Input pipeline: Trainer loader + train_step, recipe batch, {args.workers} workers"
        for res in (224, 256):
            for decode in ("cpu", "gpu"):
                section(s_in, lambda res=res, decode=decode: pipeline_bench(res, decode, work, device, args.steps, args.warmup, args.tiny,
                                                     args.workers), f"train {res} cub/hybrid decode={decode}")
        s_step = "Training step on preloaded batches: ctxsim vs plain loop; AMP / channels_last / compile variants"
        for res in (224, 256):
            section(s_step, lambda res=res: step_bench(res, work, device, args.steps, args.warmup, args.tiny, args.workers),
                    f"step {res}")
        section("Exact k-NN at iNat size", lambda: knn_bench(args.knn_n, args.knn_dim, 50, device),
                f"k-NN {args.knn_n}x{args.knn_dim}")
        if not args.no_tests:
            row, tests_log = cuda_tests(args.tiny, args.tests_timeout)
            sections["CUDA-only tests"] = [row]
            write_markdown(path, env, sections, tests_log, done=False)
        if not args.no_compile:  # last: compiling ResNet-50 takes the longest
            section("torch.compile at 224 (plain loop; fp16 contiguous eager again as the yardstick)",
                    lambda: step_bench(224, work, device, args.steps, args.warmup, args.tiny, args.workers,
                                       variants=COMPILE_VARIANTS, with_ctxsim=False), "step 224 compile")
    except KeyboardInterrupt:  # the time limit (timeout --signal=INT): keep and print what was measured
        interrupted = True
        print("interrupted: the results below are incomplete", file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    write_markdown(path, env, sections, tests_log, done=not interrupted)
    print_table(sections, env)
    print(f"\nresults: {path}")
    if interrupted:
        return 130
    failed = [r for rows in sections.values() for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
