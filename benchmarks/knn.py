"""k-NN + retrieval metrics: ctxsim (torch and faiss backends) vs pytorch-metric-learning's
AccuracyCalculator, side by side in one run, on random clustered unit-norm embeddings.

Each measurement runs in a fresh subprocess; its peak-RSS counter is reset after the data is made,
so the peak is that of the metric call. Columns: wall time of the metric call, peak RSS of the
process during it, and that peak minus the RSS before it (data, torch, faiss already loaded);
ratio = time / time of AccuracyCalculator on the same data (the plain reference). Usage:

    python benchmarks/knn.py [--threads 2] [--quick]
    python benchmarks/knn.py --scale [--threads 2] [--quick] [--cases inat,longtail,inshop] [--impls ...]

--scale measures R@1 + MAP@R at dataset scale (one function per case, ``scale_*``), each measurement
in a fresh subprocess with a timeout: ctxsim (torch and faiss backends, the default memory budget),
pytorch-metric-learning's AccuracyCalculator (its default faiss k-NN, and with a torch CustomKNN), and
a bare faiss IndexFlatIP top-k search of the depth MAP@R needs (queries in chunks of 4,096, the lists
dropped: the search alone). The children run with oom_score_adj 1000 and an address-space limit
(--mem-limit-gb, default 24 GiB), so that a reference that outgrows the machine is the one that
fails; a failure is reported as it happened (exit status, timeout, MemoryError). Before each
measurement of the two large cases it waits (polling every 60 s, up to 40 min) until no
``pytest -q`` runs on the machine (a CI run sharing it). The results of ctxsim and
AccuracyCalculator are compared (|diff| < 1e-6); for the long-tailed case, ctxsim's AP@R of 500
seeded sample queries is compared with a float64 reference computed one query at a time. Opt-in
rows (--impls): ``ctxsim-float64`` (ctxsim with precision="float64": float64 scores by torch matmul,
the default budget) and ``ctxsim-before``.
faiss's speed depends on the OpenBLAS it bundles recognising the CPU (faiss-gpu 1.15.1's OpenBLAS
0.3.15 takes some Xeons for "Prescott", about 4x slower); children inherit OPENBLAS_CORETYPE.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    if spec.get("scale"):
        return run_scale_one(spec)
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


def _child_env() -> dict:
    """The environment of a measurement: this checkout's ctxsim first on the path (the child's script
    folder is benchmarks/, so an installed ctxsim would be imported otherwise)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------- scale cases (--scale)

SCALE_NOISE = 2.6  # R@1 below 1 (some queries need the second pass) and MAP@R far from 1 at these sizes


def _clustered(rng, labels, dim: int, noise: float | None = None, centres=None):
    """Unit vectors centre[label] + noise * N(0, I) (noise: SCALE_NOISE), centres ~ N(0, I), float32
    throughout (no float64 copy of the data)."""
    import numpy as np

    noise = SCALE_NOISE if noise is None else noise

    if centres is None:
        centres = rng.standard_normal((int(labels.max()) + 1, dim), dtype=np.float32)
    x = rng.standard_normal((len(labels), dim), dtype=np.float32)
    x *= noise
    x += centres[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centres


def scale_inat(quick: bool = False, seed: int = 0):
    """(a) iNat-mini's test shape: 4,997 classes x 50 images (249,850), 512-d, query = gallery
    (R = 49 for every query). Returns (q, q_labels, g, g_labels) with g = None."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = 4_997 // (10 if quick else 1)
    labels = rng.permutation(np.repeat(np.arange(classes), 50))
    x, _ = _clustered(rng, labels, 512)
    return x, labels, None, None


def longtail_sizes(classes: int = 2_452, total: int = 136_093, largest: int = 6_834, seed: int = 0):
    """Class sizes of the long-tailed case: s_c = max(2, round(largest * c**-a)) for c = 1..classes
    (Zipf-like), with the exponent a found by bisection so that the sizes sum to `total` (a = 0.794268
    for the defaults, where the sum is exact: 6,834, 3,941, 2,856, 2,272, ... down to 14); any
    remaining difference is spread one image at a time over classes 2..classes drawn with `seed`."""
    import numpy as np

    c = np.arange(1, classes + 1, dtype=np.float64)

    def sizes(a):
        return np.maximum(2, np.round(largest * c ** -a)).astype(np.int64)

    lo, hi = 0.01, 5.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sizes(mid).sum() > total else (lo, mid)
    s = sizes(hi)
    diff = total - int(s.sum())
    if diff:
        rng = np.random.default_rng(seed)
        pick = rng.choice(np.arange(1, classes), size=abs(diff), replace=abs(diff) > classes - 1)
        np.add.at(s, pick, 1 if diff > 0 else -1)
        s = np.maximum(s, 2)
    return s


def scale_longtail(quick: bool = False, seed: int = 0):
    """(b) the long-tailed case: 136,093 images of 2,452 classes whose sizes follow
    ``longtail_sizes`` (largest 6,834, smallest 14, median 24), 512-d, query = gallery; labels in a
    seeded random order. --quick: 13,609 images, 245 classes, largest 683."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = longtail_sizes(2_452 // 10, 136_093 // 10, 6_834 // 10, seed) if quick else longtail_sizes(seed=seed)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    x, _ = _clustered(rng, labels, 512)
    return x, labels, None, None


def scale_inshop(quick: bool = False, seed: int = 0):
    """(c) In-Shop's query/gallery shape: 14,218 queries and 12,612 gallery images of 3,985 classes,
    512-d; every class has at least one query and one gallery image (the rest drawn uniformly), the
    two sets share the class centres."""
    import numpy as np

    rng = np.random.default_rng(seed)
    f = 10 if quick else 1
    classes, nq, ng = 3_985 // f, 14_218 // f, 12_612 // f
    ql = rng.permutation(np.concatenate([np.arange(classes), rng.integers(0, classes, nq - classes)]))
    gl = rng.permutation(np.concatenate([np.arange(classes), rng.integers(0, classes, ng - classes)]))
    q, centres = _clustered(rng, ql, 512)
    g, _ = _clustered(rng, gl, 512, centres=centres)
    return q, ql, g, gl


SCALE_CASES = {
    "inat": ("(a) iNat-mini test shape: 249,850 x 512, 4,997 classes x 50, query = gallery", scale_inat, True),
    "longtail": ("(b) long-tailed: 136,093 x 512, 2,452 classes, largest 6,834, query = gallery", scale_longtail, True),
    "inshop": ("(c) In-Shop shape: 14,218 queries, 12,612 gallery, 3,985 classes, 512-d", scale_inshop, False),
}  # name: (title, data function, needs more than ~4 GB somewhere: wait for CI first)
SCALE_IMPLS = ("ctxsim-torch", "ctxsim-faiss", "pml", "pml-torchknn", "faiss-bare")
# ctxsim's rows: implementation -> retrieval_results arguments (ctxsim-float64 is opt-in, --impls)
CTXSIM_IMPLS = {"ctxsim-torch": {"backend": "torch"}, "ctxsim-faiss": {"backend": "faiss"},
                "ctxsim-float64": {"backend": "torch", "precision": "float64"}}
# opt-in (--impls): ctxsim's metrics module as it was before streaming (one first pass of depth max R for
# every query, n x depth float64 tensors), loaded from git, faiss backend
BEFORE_COMMIT = "f29ec1a"


def _metrics_before():
    """ctxsim/eval/metrics.py at BEFORE_COMMIT as a module (it imports the current ctxsim.eval.knn,
    whose searchers are unchanged since)."""
    import types

    src = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:ctxsim/eval/metrics.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    mod = types.ModuleType("ctxsim_metrics_before")
    exec(compile(src, f"{BEFORE_COMMIT}:ctxsim/eval/metrics.py", "exec"), mod.__dict__)
    return mod
SAMPLE_QUERIES = 500


def _sample(n: int) -> list[int]:
    import numpy as np

    return sorted(np.random.default_rng(1).choice(n, size=min(SAMPLE_QUERIES, n), replace=False).tolist())


def _max_r(ql, gl) -> int:
    """max R: the depth MAP@R needs (same-label gallery items, the query itself not counted)."""
    import numpy as np

    if gl is None:
        return int(np.bincount(ql).max()) - 1
    counts = np.bincount(gl, minlength=int(max(ql.max(), gl.max())) + 1)
    return int(counts[ql].max())


def reference_ap_at_r(x, y, rows) -> dict:
    """AP@R of the queries `rows` (query = gallery), one query at a time, ranking by score descending
    then index ascending, with three kinds of scores: float64 ("ap64"), float32 from numpy's
    matrix-vector product ("ap32"), and float32 from one torch matmul of all the rows against the
    gallery ("ap32sgemm", the kind of kernel both ctxsim backends search with)."""
    import numpy as np
    import torch

    x64 = x.astype(np.float64)
    idx = np.arange(len(x))
    sgemm = (torch.from_numpy(x[rows]) @ torch.from_numpy(x).T).numpy()
    out = {"ap64": [], "ap32": [], "ap32sgemm": []}
    for j, i in enumerate(rows):
        r = int((y == y[i]).sum()) - 1
        for key, s in (("ap64", x64 @ x64[i]), ("ap32", (x @ x[i]).astype(np.float64)),
                       ("ap32sgemm", sgemm[j].astype(np.float64))):
            cand = idx[idx != i]
            order = cand[np.lexsort((cand, -s[cand]))][:r]
            rel = y[order] == y[i]
            out[key].append(float((np.cumsum(rel) / np.arange(1, r + 1) * rel).sum() / r) if r else float("nan"))
    return out


def run_scale_one(spec: dict) -> dict:
    """One measurement of --scale in this (fresh) process: builds the case's data, then times the call."""
    lim = int(spec["mem_limit_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:  # the first process the kernel kills, not the CI's
            fh.write("1000")
    except OSError:
        pass
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    import faiss

    faiss.omp_set_num_threads(spec["threads"])
    q, ql, g, gl = SCALE_CASES[spec["case"]][1](spec["quick"])
    impl = spec["impl"]
    if impl.startswith("pml"):
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import CustomKNN
    elif impl == "ctxsim-before":
        retrieval_before = _metrics_before().retrieval_metrics
    else:
        from ctxsim.eval import retrieval_results
    base = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    extra = {}
    if impl == "ctxsim-before":
        res = retrieval_before(q, ql, g, gl, ks=(1,), backend="faiss")
        out = {"R@1": res["R@1"], "MAP@R": res["MAP@R"]}
    elif impl in CTXSIM_IMPLS:
        res, st = retrieval_results(q, ql, g, gl, ks=(1,), **CTXSIM_IMPLS[impl])
        out = {"R@1": res["R@1"], "MAP@R": res["MAP@R"]}
    elif impl.startswith("pml"):
        knn = {"knn_func": CustomKNN(CosineSimilarity(), batch_size=4096)} if impl == "pml-torchknn" else {}
        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count",
                                  device=torch.device("cpu"), **knn)
        # query = gallery: AccuracyCalculator's own self-exclusion (reference=None); In-Shop: disjoint sets
        res = calc.get_accuracy(q, ql) if g is None else calc.get_accuracy(q, ql, g, gl, ref_includes_query=False)
        out = {"R@1": res["precision_at_1"], "MAP@R": res["mean_average_precision_at_r"]}
    elif impl == "faiss-bare":
        k = _max_r(ql, gl) + (1 if g is None else 0)  # + the query itself
        index = faiss.IndexFlatIP(q.shape[1])
        index.add(q if g is None else g)
        for start in range(0, len(q), 4096):
            index.search(q[start : start + 4096], k)
        out, extra = {}, {"k": k}
    elif impl == "ref64":
        out, extra = {}, reference_ap_at_r(q, ql, _sample(len(q)))
    else:
        raise ValueError(impl)
    dt = time.perf_counter() - t0
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if impl in CTXSIM_IMPLS and spec["case"] == "longtail":
        extra["sample_ap"] = np.asarray(st["ap_at_r"])[_sample(len(q))].tolist()
    return {"time_s": dt, "peak_rss_mb": peak, "over_data_mb": peak - base, "metrics": out, **extra}


def _ci_running() -> bool:
    return subprocess.run(["pgrep", "-f", "pytest -q"], capture_output=True, check=False).returncode == 0


def _wait_for_ci(max_wait_s: float = 2400, poll_s: float = 60) -> str:
    """Waits until no `pytest -q` runs (a CI run sharing the machine), at most max_wait_s."""
    t0 = time.monotonic()
    while _ci_running():
        if time.monotonic() - t0 > max_wait_s:
            return f"CI still running after {max_wait_s / 60:.0f} min"
        print(f"  (waiting for a running `pytest -q` to finish, {time.monotonic() - t0:.0f} s so far)", flush=True)
        time.sleep(poll_s)
    return f"waited {time.monotonic() - t0:.0f} s for CI" if time.monotonic() - t0 > 1 else ""


def _child_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _measure(spec: dict, timeout_s: float) -> dict:
    """Runs one measurement in a fresh process; on failure, how it failed and the peak RSS it had
    reached (read from /proc while it ran)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_child_env())
    seen = None
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                seen = _child_hwm_mb(proc.pid) or seen
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    proc.communicate()
                    return {"failed": f"timeout after {timeout_s / 60:.0f} min (killed)", "seen_peak_mb": seen,
                            "wall_s": time.perf_counter() - t0}
    except BaseException:
        proc.kill()
        raise
    if proc.returncode == 0:
        return json.loads(stdout.strip().splitlines()[-1])
    rc = proc.returncode
    how = f"killed by signal {-rc} (exit {128 - rc})" if rc < 0 else f"exit {rc}"
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] if stderr else []
    if last:
        how += f": {last[0].strip()[:160]}"
    return {"failed": how, "seen_peak_mb": seen, "wall_s": time.perf_counter() - t0}


def scale_main(args) -> list[dict]:
    """The --scale section: prints one table per case and the equality checks; returns the rows."""
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    rows_all = []
    print(f"threads={args.threads}  cpu_count={os.cpu_count()}  mem limit per child={args.mem_limit_gb} GiB  "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  load avg at start={os.getloadavg()[0]:.2f}")
    for name in cases:
        title, _, big = SCALE_CASES[name]
        print(f"\n### {title}{' (--quick: 1/10 size)' if args.quick else ''}")
        rows = {}
        for impl in impls + (["ref64"] if name == "longtail" else []):
            waited = _wait_for_ci() if big and not args.quick else ""
            spec = dict(scale=True, case=name, impl=impl, threads=args.threads, quick=args.quick,
                        mem_limit_gb=args.mem_limit_gb)
            timeout = args.pml_timeout if impl.startswith("pml") else args.timeout
            ci_before = _ci_running()
            row = _measure(spec, timeout)
            row.update(impl=impl, case=name, note=waited, ci_during=ci_before or _ci_running())
            rows[impl] = row
            rows_all.append(row)
            print(f"  {impl}: " + (row["failed"] if "failed" in row else
                                   f"{row['time_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB"), flush=True)
        print("| impl | time s | peak RSS MB | RSS over data MB | R@1 | MAP@R | note |")
        print("|---|---|---|---|---|---|---|")
        for impl, row in rows.items():
            if impl == "ref64":
                continue
            note = "; ".join(filter(None, [row.get("note"), "a `pytest -q` ran meanwhile" if row["ci_during"] else "",
                                           f"k={row['k']}" if "k" in row else ""]))
            if "failed" in row:
                seen = f"{row['seen_peak_mb']:.0f} (when stopped)" if row.get("seen_peak_mb") else "-"
                print(f"| {impl} | {row['failed']} after {row['wall_s']:.0f} s | {seen} | - | - | - | {note} |")
                continue
            m = row["metrics"]
            r1 = f"{m['R@1']:.6f}" if "R@1" in m else "-"
            mp = f"{m['MAP@R']:.6f}" if "MAP@R" in m else "-"
            print(f"| {impl} | {row['time_s']:.1f} | {row['peak_rss_mb']:.0f} | {row['over_data_mb']:.0f} | {r1} | {mp} | {note} |")
        for ours in [i for i in rows if i in CTXSIM_IMPLS and "failed" not in rows[i]]:
            for ref in [i for i in rows if i.startswith(("pml", "ctxsim-before")) and "failed" not in rows[i]]:
                a, b = rows[ours]["metrics"], rows[ref]["metrics"]
                d1, dm = abs(a["R@1"] - b["R@1"]), abs(a["MAP@R"] - b["MAP@R"])
                ok = "equal" if max(d1, dm) < 1e-6 else "DIFFER"
                print(f"- {ours} vs {ref}: |dR@1| = {d1:.2e}, |dMAP@R| = {dm:.2e}: {ok} (< 1e-6)")
        ref = rows.get("ref64")
        if ref and "failed" not in ref:
            for ours in [i for i in rows if i.startswith("ctxsim") and "sample_ap" in rows[i]]:
                import numpy as np

                got = np.array(rows[ours]["sample_ap"])
                for key, what in (("ap64", "float64"), ("ap32", "float32 (numpy gemv)"),
                                  ("ap32sgemm", "float32 (one torch matmul of the 500)")):
                    if key not in ref:
                        continue
                    want = np.array(ref[key])
                    diff = np.abs(got - want)
                    print(f"- {ours} AP@R of {len(got)} sample queries vs a {what} one-query reference: max |diff| "
                          f"{diff.max():.2e} ({int((diff > 1e-12).sum())} queries differ by > 1e-12), mean "
                          f"{got.mean():.9f} vs {want.mean():.9f} (|diff| {abs(got.mean() - want.mean()):.2e})")
            print(f"- reference computed in {ref['time_s']:.0f} s")
        sys.stdout.flush()
    print(f"\nload avg at end={os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows_all, indent=1))
    return rows_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--scale", action="store_true", help="the dataset-scale cases (see the module docstring)")
    ap.add_argument("--cases", default=",".join(SCALE_CASES), help="--scale: cases to run, comma-separated")
    ap.add_argument("--impls", default=",".join(SCALE_IMPLS), help="--scale: implementations, comma-separated")
    ap.add_argument("--timeout", type=float, default=5400, help="--scale: seconds per ctxsim/faiss measurement")
    ap.add_argument("--pml-timeout", type=float, default=1200, help="--scale: seconds per AccuracyCalculator run")
    ap.add_argument("--mem-limit-gb", type=float, default=24.0, help="--scale: address-space limit of each child")
    ap.add_argument("--json", help="--scale: also write the rows to this JSON file")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.scale:
        scale_main(args)
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
                                  text=True, check=False, env=_child_env())
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
