"""Image-pipeline throughput: ctxsim's fast recipe pipelines vs plain ImageFolder-style PIL loading.

Generates CUB-like 500x375 JPEGs (quality 75) in a temporary folder, then for each recipe times
(a) the plain loader: ``open + Image.open + convert('RGB')`` and the torchvision Compose of the
recipe (what the reference code runs), and (b) ``FastImagePipeline`` on the same files, in the same
process, on one core (``torch.set_num_threads(1)``, as one DataLoader worker). Prints images/s,
ms/image, peak RSS and the speed ratio. Never asserts anything about time.

    python benchmarks/data.py [--images 200] [--repeats 5] [--size 500x375]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctxsim.data.transforms import FastImagePipeline, pil_rgb_loader, recipe_transforms, reference_transform


def make_images(folder: Path, n: int, w: int, h: int, seed: int = 0):
    """Photo-like JPEGs: smooth colour fields plus texture noise, quality 75 (CUB's typical size)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, (h // 24 + 1, w // 24 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-18, 19, (h, w, 3))
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, "JPEG", quality=75)
        paths.append(str(p))
    return paths


def time_pair(plain, fast, paths, repeats: int):
    """Best-of-``repeats`` seconds per image of both pipelines, passes interleaved (fair under load)."""
    plain(paths[0]), fast(paths[0])  # warm-up (imports, first allocations)
    best = [float("inf"), float("inf")]
    for r in range(repeats):
        for k, fn in enumerate((plain, fast)):
            torch.manual_seed(r)
            t0 = time.perf_counter()
            for p in paths:
                fn(p)
            best[k] = min(best[k], (time.perf_counter() - t0) / len(paths))
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="500x375")
    args = ap.parse_args()
    torch.set_num_threads(1)
    w, h = (int(v) for v in args.size.lower().split("x"))
    cases = [
        ("224 train (CUB, RRC 224 s=.16 + flip)", "cub", 224, 0),
        ("256 train (CUB/Cars, RRC 256 + flip)", "cub", 256, 0),
        ("256 train (SOP/In-Shop, Resize 288 + RRC 256)", "sop", 256, 0),
        ("224 eval (Resize 256 + CenterCrop 224)", "cub", 224, 1),
        ("256 eval (Resize 288 + CenterCrop 256)", "cub", 256, 1),
        ("256 eval (SOP, Resize (288,288) + CC 256)", "sop", 256, 1),
    ]
    with tempfile.TemporaryDirectory() as d:
        paths = make_images(Path(d), args.images, w, h)
        print(f"{args.images} generated {w}x{h} JPEGs (q75), 1 thread, best of {args.repeats}; "
              f"torch {torch.__version__}, Pillow {Image.__version__}")
        hdr = f"{'pipeline':48s} {'plain img/s':>11s} {'fast img/s':>10s} {'plain ms':>8s} {'fast ms':>7s} {'ratio':>6s} {'peak RSS MB':>11s}"
        print(hdr)
        print("-" * len(hdr))
        for label, ds, res, which in cases:
            rec = recipe_transforms(ds, res)[which]
            ref = reference_transform(rec)
            fast = FastImagePipeline(rec)
            t_plain, t_fast = time_pair(lambda p, ref=ref: ref(pil_rgb_loader(p)), fast, paths, args.repeats)
            print(f"{label:48s} {1 / t_plain:11.0f} {1 / t_fast:10.0f} {t_plain * 1e3:8.2f} {t_fast * 1e3:7.2f} "
                  f"{t_plain / t_fast:5.2f}x {peak_rss_mb():11.0f}")
        # large photos (e.g. SOP/iNat originals): the JPEG draft path
        big = make_images(Path(d), max(20, args.images // 5), 2 * 1024, 2 * 768, seed=1)
        for label, ds, res, which in [("256 eval, 2048x1536 JPEG (draft 1/2)", "cub", 256, 1),
                                      ("224 eval, 2048x1536 JPEG (draft 1/2)", "cub", 224, 1)]:
            rec = recipe_transforms(ds, res)[which]
            ref = reference_transform(rec)
            fast = FastImagePipeline(rec)
            t_plain, t_fast = time_pair(lambda p, ref=ref: ref(pil_rgb_loader(p)), fast, big, args.repeats)
            print(f"{label:48s} {1 / t_plain:11.0f} {1 / t_fast:10.0f} {t_plain * 1e3:8.2f} {t_fast * 1e3:7.2f} "
                  f"{t_plain / t_fast:5.2f}x {peak_rss_mb():11.0f}")


if __name__ == "__main__":
    main()
