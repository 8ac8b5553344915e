"""GPU check: AMP training steps of the paper's 224 and 256 ResNet-50 recipes on generated full-size
JPEGs (images/s, peak GPU memory, data-loader stall share) and exact k-NN evaluation at iNat size
(250k x 512) through ctxsim.eval. Prints one table. Unattended, no network (random backbone init:
the speed of a step does not depend on the weights).

    python benchmarks/gpu_check.py                 # the real check (needs CUDA)
    python benchmarks/gpu_check.py --cpu-tiny      # dry run on CPU with tiny sizes (tests, CI)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


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


def train_bench(resolution: int, root: Path, device: torch.device, steps: int, warmup: int, tiny: bool) -> dict:
    """Times AMP training steps of recipe(cub, hybrid, resolution) on the generated images."""
    from torch.utils.data import DataLoader

    from ctxsim.train import recipe
    from ctxsim.train.engine import _ListBatchSampler, _Run, _worker_init
    from ctxsim.train.events import NullSink

    cfg = recipe("cub", "hybrid", resolution).with_overrides(
        root=str(root), device=device.type, model={"backbone_weights": None}, epochs=1)
    if tiny:
        cfg = cfg.with_overrides(batch_size=8, num_workers=0, model={"arch": "tiny", "backbone_weights": None},
                                 sampler="m_per_class", sampler_kw={})
    if resolution == 224 and not tiny:
        # balanced224 hard-codes 96 classes per round; the generated set has fewer train classes
        cfg = cfg.with_overrides(sampler="m_per_class", sampler_kw={})
    cfg = cfg.with_overrides(num_workers=min(cfg.num_workers, os.cpu_count() or 1))
    run = _Run(cfg, NullSink(), None, device, None)
    run.build()
    run.model.train()
    run.model.apply_bn_mode()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    total = warmup + steps
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < total:
        run.sampler.set_epoch(epoch)
        batches += [list(b) for b in run.sampler]
        epoch += 1
    loader = DataLoader(run.data.train, batch_sampler=_ListBatchSampler(batches[:total]), num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
                        persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)
    wait = compute = 0.0
    n_img = 0
    it = iter(loader)
    for i in range(total):
        t0 = time.perf_counter()
        images, labels = next(it)
        t1 = time.perf_counter()
        run.train_step(images, labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i >= warmup:
            wait += t1 - t0
            compute += t2 - t1
            n_img += images.shape[0]
    del it
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {
        "what": f"train {resolution} cub/hybrid ({cfg.model.arch}, AMP={run.amp})",
        "batch": cfg.batch_size, "n": steps, "seconds": wait + compute, "per_s": n_img / (wait + compute),
        "unit": "img/s", "peak_gib": peak, "stall": wait / (wait + compute),
    }


def knn_bench(n: int, dim: int, per_class: int, device: torch.device, ks=(1, 4, 16, 32)) -> dict:
    """Exact k-NN R@K + MAP@R of n random unit vectors (query == gallery, iNat-like 50 per class)."""
    from ctxsim.eval import retrieval_metrics

    g = torch.Generator(device="cpu").manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    labels = torch.arange(n) // per_class
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    m = retrieval_metrics(emb, labels.to(device), ks=ks, map_at_r=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"what": f"k-NN eval {n}x{dim} K={','.join(map(str, ks))} + MAP@R (R@1 {m['R@1']:.4f})",
            "batch": "-", "n": n, "seconds": dt, "per_s": n / dt, "unit": "queries/s", "peak_gib": peak,
            "stall": float("nan")}


def print_table(rows: list[dict], device: str) -> None:
    print(f"\nctxsim GPU check on {device} (torch {torch.__version__})")
    head = f"{'measurement':58} {'batch':>5} {'n':>7} {'seconds':>8} {'throughput':>18} {'peak GiB':>8} {'stall':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['what']:58} FAILED: {r['error']}")
            continue
        stall = "-" if r["stall"] != r["stall"] else f"{100 * r['stall']:.0f}%"
        peak = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"
        tp = f"{r['per_s']:.0f} {r['unit']}"
        print(f"{r['what']:58} {r['batch']!s:>5} {r['n']:>7} {r['seconds']:>8.2f} {tp:>18} {peak:>8} {stall:>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-tiny", "--dry-run", dest="tiny", action="store_true",
                    help="tiny sizes on CPU (checks the script, measures nothing meaningful)")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per recipe")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotune, workers)")
    ap.add_argument("--classes", type=int, default=64, help="generated classes (half train, half test)")
    ap.add_argument("--per-class", type=int, default=12, help="generated images per class")
    ap.add_argument("--knn-n", type=int, default=250_000, help="k-NN size (iNat test: 249,850)")
    ap.add_argument("--knn-dim", type=int, default=512)
    ap.add_argument("--workdir", default=None, help="where to write the generated JPEGs (default: a temp dir)")
    args = ap.parse_args(argv)

    if args.tiny:
        device = torch.device("cpu")
        torch.set_num_threads(1)
        args.steps, args.warmup, args.classes, args.per_class = 2, 1, 8, 4
        args.knn_n, args.knn_dim = 2000, 64
        size = (80, 60)
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device (use --cpu-tiny for a dry run)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        size = (500, 375)  # CUB's typical image size
    os.environ.setdefault("CTXSIM_OFFLINE", "1")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ctxsim-gpucheck-"))
    rows = []
    try:
        t = time.perf_counter()
        make_cub_like(work, args.classes, args.per_class, size)
        print(f"generated {args.classes * args.per_class} JPEGs {size[0]}x{size[1]} in {time.perf_counter() - t:.1f}s",
              file=sys.stderr)
        for res in (224, 256):
            try:
                rows.append(train_bench(res, work, device, args.steps, args.warmup, args.tiny))
            except Exception as e:  # report and go on: the table is the output
                rows.append({"what": f"train {res} cub/hybrid", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            if device.type == "cuda":
                torch.cuda.empty_cache()
        try:
            rows.append(knn_bench(args.knn_n, args.knn_dim, 50, device))
        except Exception as e:
            rows.append({"what": f"k-NN eval {args.knn_n}x{args.knn_dim}", "error": f"{type(e).__name__}: {e}"})
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)"
    print_table(rows, name)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
