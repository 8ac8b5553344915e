"""k-NN + retrieval metrics: ctxsim (torch and faiss backends) vs pytorch-metric-learning's
AccuracyCalculator, side by side in one run, on random clustered unit-norm embeddings.

Each measurement runs in a fresh subprocess; its peak-RSS counter is reset after the data is made,
so the peak is that of the metric call. Columns: wall time of the metric call, peak RSS of the
process during it, and that peak minus the RSS before it (data, torch, faiss already loaded);
ratio = time / time of AccuracyCalculator on the same data (the plain reference). Usage:

    python benchmarks/knn.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def make_data(n: int, dim: int, classes: int, seed: int = 0, noise: float = 1.0):
    """Clustered unit vectors: class centres ~ N(0, I), points = centre + noise * N(0, I)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, size=n - classes)])
    rng.shuffle(labels)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    x = centres[labels] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_one(spec: dict) -> dict:
    """Runs one configuration in this process and returns its row."""
    import torch

    torch.set_num_threads(spec["threads"])
    try:
        import faiss

        faiss.omp_set_num_threads(spec["threads"])
    except ImportError:
        pass
    x, y = make_data(spec["n"], spec["dim"], spec["classes"], noise=spec["noise"])
    ks = tuple(spec["ks"])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if spec["impl"] == "pml":  # imported before measuring the base RSS, like ctxsim below
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    else:
        from ctxsim.eval import retrieval_metrics
    base = _status_mb("VmRSS")
    reset = _reset_peak_rss()  # so the peak below is the metric call's, not the data generation's
    t0 = time.perf_counter()
    if spec["impl"] == "pml":
        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                  k="max_bin_count", device=torch.device("cpu"))
        res = calc.get_accuracy(xt, yt)
        out = {"R@1": res["precision_at_1"], "MAP@R": res["mean_average_precision_at_r"]}
    else:
        out = retrieval_metrics(xt, yt, ks=ks, backend=spec["impl"])
        out = {k: v for k, v in out.items() if k != "RP"}
    dt = time.perf_counter() - t0
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"time_s": dt, "peak_rss_mb": peak, "over_data_mb": peak - base, "metrics": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    scale = 10 if args.quick else 1
    # (title, n, dim, classes, noise, ks, impls): about 5 images per class as SOP; the noise puts R@1
    # in the SOP range so that part of the queries need the second (depth max K) pass
    cases = [
        ("12k x 512, R@1+MAP@R", 12_000 // scale, 512, 2_400 // scale, 2.2, (1,), ("torch", "faiss", "pml")),
        ("20k x 128, R@1+MAP@R", 20_000 // scale, 128, 4_000 // scale, 1.4, (1,), ("torch", "faiss", "pml")),
        ("60k x 512, R@1+MAP@R", 60_000 // scale, 512, 12_000 // scale, 2.2, (1,), ("torch", "faiss", "pml")),
        ("SOP-size 60,502 x 512, 11,316 classes, R@1/10/100/1000+MAP@R", 60_502 // scale, 512, 11_316 // scale,
         2.2, (1, 10, 100, 1000), ("torch", "faiss")),
    ]
    print(f"threads={args.threads}  cpu_count={os.cpu_count()}  load avg at start={os.getloadavg()[0]:.2f}")
    for title, n, dim, classes, noise, ks, impls in cases:
        print(f"\n### {title}")
        print("| impl | time s | ratio vs PML | peak RSS MB | RSS over data MB | metrics |")
        print("|---|---|---|---|---|---|")
        rows = {}
        for impl in impls:
            spec = dict(impl=impl, n=n, dim=dim, classes=classes, ks=list(ks), noise=noise, threads=args.threads)
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                print(f"| {impl} | failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode} |")
                continue
            rows[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = rows.get("pml", {}).get("time_s")
        for impl, row in rows.items():
            ratio = f"{row['time_s'] / ref:.2f}" if ref else "-"
            mets = ", ".join(f"{k}={v:.4f}" for k, v in row["metrics"].items())
            print(f"| {impl} | {row['time_s']:.2f} | {ratio} | {row['peak_rss_mb']:.0f} | "
                  f"{row['over_data_mb']:.0f} | {mets} |")
        sys.stdout.flush()
    print(f"\nload avg at end={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
