"""Does training transfer? Test MAP@R on the UNSEEN classes of the small-data recipes, over seeds.

For icons (514 training classes, retrieval among 528 unseen ones; docs/icons.md), fashion-mnist and
digits (train classes 0-4, retrieval among 5-9), query == gallery: raw
L2-normalised pixels, the untrained network of each seed, and each variant below trained with
``ctxsim.train.fit`` (the product's own code path), seeds 0,1,2. Prints a markdown table: test MAP@R
as mean ± the 95% Student-t half-width over seeds (ctxsim.report.stats.seed_summary), R@1, the
training loss over the first and last fifth of the steps (does it fall?), seconds per run; then the
paired test (bootstrap over queries and seeds, ctxsim.report.stats.paired_bootstrap) of the first
hybrid variant against every other trained variant.

Variants (``--variant NAME=LOSS[:key=value,...]``, repeatable; default: ``DEFAULT_VARIANTS``):
the recipe of each loss, and the settings chosen on VALIDATION ONLY (``val_classes=2``: train on
classes 0-2, validate on 3-4; issue 16's study, README "Learning on small data"). Nothing here is
chosen on the test classes.

    python benchmarks/learning.py [--datasets icons fashion-mnist] [--seeds 0 1 2] [--threads 1] [--jobs 2]
        [--variant "hybrid (centred ctx grad)=hybrid:loss.ctx_center_grad=true"] [--tuned] [--per-class]
        [--root DATA] [--out FILE.md]

``--tuned``: only the equal-budget tuned rows; ``--per-class``: also test MAP@R per unseen class.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

# Equal budgets: the best of 8 `ctxsim tune` trials per loss on the validation classes (val_classes=2,
# batch 48, lr and one loss parameter; benchmarks/results/learning-2026-11-30.md has the commands)
TUNED_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hybrid (tuned: lr 1.8e-3, lam 0.37)": ("hybrid", ["lr=0.0017937", "loss.lam=0.3684"]),
    "contrastive (tuned: lr 1.8e-3, neg_margin 0.49)": ("contrastive", ["lr=0.0017937", "loss.neg_margin=0.4917"]),
    "multisimilarity (tuned: lr 1.8e-3, base 0.49)": ("multisimilarity", ["lr=0.0017937", "loss.base=0.4917"]),
}
# name -> (loss, --set assignments); the first hybrid entry is compared with all the others
DEFAULT_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hybrid (recipe, k = 16 per class)": ("hybrid", []),
    "hybrid (k=4, the recipe before issue 16)": ("hybrid", ["loss.k=4"]),
    "contrastive (recipe)": ("contrastive", []),
    "multisimilarity (recipe)": ("multisimilarity", []),
    **TUNED_VARIANTS,
    # the two earlier directions of the rising-loss diagnosis (with k=4)
    "hybrid k=4 (bn_mode=none)": ("hybrid", ["loss.k=4", "model.bn_mode=none"]),
    "hybrid k=4 (centred ctx gradient)": ("hybrid", ["loss.k=4", "loss.ctx_center_grad=true"]),
}


# icons (docs/icons.md): the recipe of each loss, and the best of 4 `ctxsim tune` trials per loss on the
# validation classes (val_classes=0.2, seed 0; lr and one loss parameter each, TPE sampler seed 0; the
# commands and studies are in benchmarks/results/learning-icons-2026-12-07.md)
ICONS_TUNED: dict[str, tuple[str, list[str]]] = {
    "hybrid (tuned: lr 8.8e-4, lam 0.60)": ("hybrid", ["lr=0.0008841", "loss.lam=0.6006"]),
    "contrastive (tuned: lr 6.3e-4, neg_margin 0.62)": ("contrastive", ["lr=0.0006299", "loss.neg_margin=0.6229"]),
    "multisimilarity (tuned: lr 8.8e-4, base 0.66)": ("multisimilarity", ["lr=0.0008841", "loss.base=0.6576"]),
    "proxy_anchor (tuned: lr 1.0e-3, mrg 0.16)": ("proxy_anchor", ["lr=0.001023", "loss.mrg=0.1635"]),
}
ICONS_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "hybrid (recipe)": ("hybrid", []),
    "contrastive (recipe)": ("contrastive", []),
    "multisimilarity (recipe)": ("multisimilarity", []),
    "proxy_anchor (recipe)": ("proxy_anchor", []),
    **ICONS_TUNED,
}


def _interval(values: list[float]) -> str:
    from ctxsim.report.stats import seed_summary

    s = seed_summary(values)
    if s.half_width is None:
        return f"{s.mean:.3f}"
    return f"{s.mean:.3f} ± {s.half_width:.3f}"


def _fifths(losses: list[float]) -> tuple[float, float]:
    n = max(1, len(losses) // 5)
    return statistics.mean(losses[:n]), statistics.mean(losses[-n:])


def parse_variant(text: str) -> tuple[str, tuple[str, list[str]]]:
    name, _, spec = text.partition("=")
    loss, _, sets = spec.partition(":")
    if not name or not loss:
        raise SystemExit(f"--variant expects NAME=LOSS[:key=value,...], got {text!r}")
    return name.strip(), (loss.strip(), [s for s in sets.split(",") if s.strip()])


def train_one(dataset: str, name: str, loss: str, sets: list[str], seed: int, threads: int = 1) -> dict:
    """One trained variant on one seed through ``ctxsim.train.fit``: test MAP@R and R@1, the last
    validation MAP@R (runs with val_classes), the loss over the first and last fifth of the steps,
    seconds, and the per-query test AP@R with the queries' labels. Runs in a worker process with --jobs."""
    from ctxsim.eval.per_query import load_per_query
    from ctxsim.train import fit
    from ctxsim.train.configure import configure
    from ctxsim.train.events import ListSink

    torch.set_num_threads(threads)
    cfg = configure(dataset, loss, 256, sets=["device=cpu", "num_workers=0", *sets], seed=seed)
    sink = ListSink()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = fit(cfg, sink=sink, run_dir=tmp)
        secs = time.perf_counter() - t0
        q = load_per_query(Path(tmp) / "per_query.npz")
    val = [e.data["metrics"]["MAP@R"] for e in sink.events if e.kind == "eval" and e.data.get("split") == "val"]
    out = {"map": res.metrics["MAP@R"], "r1": res.metrics["R@1"], "secs": secs,
           "val": val[-1] if val else float("nan"),
           "fifths": _fifths([e.data["loss"] for e in sink.events if e.kind == "step"]),
           "ap": q.ap_at_r[~q.lone].astype(np.float64), "labels": np.asarray(q.labels)[~q.lone]}
    val_text = "" if np.isnan(out["val"]) else f"val MAP@R {out['val']:.4f} "
    print(f"  {dataset} {name} seed {seed}: {val_text}test MAP@R {out['map']:.4f} R@1 {out['r1']:.3f} loss "
          f"{out['fifths'][0]:.3f} -> {out['fifths'][1]:.3f} ({secs:.0f}s)", flush=True)
    return out


def run_dataset(dataset: str, seeds: list[int], variants: dict[str, tuple[str, list[str]]], jobs: int = 1,
                threads: int = 1) -> tuple[list, dict, dict]:
    """Rows (method, MAP@R per seed, R@1 per seed, (first, last) loss fifths per seed, seconds per seed,
    the last validation MAP@R per seed of runs with val_classes); the per-query test values (seeds x
    queries) of each trained variant; and the labels of those queries. ``jobs`` runs that many
    trainings at once (worker processes of ``threads`` torch threads each)."""
    from ctxsim.eval import evaluate_bundle, retrieval_metrics
    from ctxsim.train.build import build_run_data, build_run_model, seed_everything
    from ctxsim.train.configure import configure

    base = configure(dataset, "hybrid", 256, sets=["device=cpu", "num_workers=0"])
    data = build_run_data(base)
    x = data.query.images.flatten(1).float()  # the uint8 test images as stored
    labels = torch.as_tensor(data.query.labels)
    t0 = time.perf_counter()
    raw = retrieval_metrics(torch.nn.functional.normalize(x, dim=1), labels, ks=data.ks)
    rows = [("raw pixels (L2)", [raw["MAP@R"]], [raw["R@1"]], [], [time.perf_counter() - t0], [])]
    m_u, r_u, t_u = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        seed_everything(seed)  # the initial weights fit() builds for this seed
        u = evaluate_bundle(build_run_model(base.with_overrides(seed=seed), data.in_channels), data, "cpu", batch_size=512)
        m_u.append(u["MAP@R"]), r_u.append(u["R@1"]), t_u.append(time.perf_counter() - t0)
    rows.append((f"untrained {base.model.arch}", m_u, r_u, [], t_u, []))
    tasks = [(dataset, name, loss, sets, seed, threads) for name, (loss, sets) in variants.items() for seed in seeds]
    if jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            results = list(ex.map(train_one, *zip(*tasks)))
    else:
        results = [train_one(*t) for t in tasks]
    done = dict(zip(((t[1], t[4]) for t in tasks), results))
    per_query: dict[str, np.ndarray] = {}
    query_labels: dict[str, np.ndarray] = {}
    for name in variants:
        runs = [done[(name, seed)] for seed in seeds]
        rows.append((name, [r["map"] for r in runs], [r["r1"] for r in runs], [r["fifths"] for r in runs],
                     [r["secs"] for r in runs], [r["val"] for r in runs]))
        per_query[name] = np.stack([r["ap"] for r in runs])
        query_labels[name] = runs[0]["labels"]  # the same queries for every seed
    return rows, per_query, query_labels


def per_class_lines(per_query: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> list[str]:
    """Test MAP@R per unseen class (mean over seeds) of every trained variant: where a difference comes from."""
    names = list(per_query)
    classes = sorted(set(np.unique(labels[names[0]]).tolist()))
    out = ["test MAP@R per unseen class (mean over seeds):", "",
           "| variant | " + " | ".join(f"class {c}" for c in classes) + " |", "|---|" + "---|" * len(classes)]
    for n in names:
        cells = [f"{np.nanmean(per_query[n][:, labels[n] == c]):.3f}" for c in classes]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def paired_lines(per_query: dict[str, np.ndarray], variants: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Each hybrid variant minus each non-hybrid variant (and the first hybrid minus the other hybrids):
    MAP@R difference with its 95% paired-bootstrap interval and p-value (queries and seeds resampled alike)."""
    from ctxsim.report.stats import paired_bootstrap

    hybrids = [n for n, (loss, _) in variants.items() if loss == "hybrid"]
    others = [n for n in variants if n not in hybrids]
    out: list[str] = []
    for k, ref in enumerate(hybrids):
        against = others + (hybrids[1:] if k == 0 else [])
        if not against:
            continue
        out += [f"paired test, {ref} minus each (MAP@R, 95% bootstrap over queries and seeds):", ""]
        for name in against:
            r = paired_bootstrap({"MAP@R": per_query[ref]}, {"MAP@R": per_query[name]})[0]
            p = f"p < {1 / r.n_resamples:.4f}" if r.p_value == 0 else f"p {r.p_value:.4f}"
            out.append(f"- vs {name}: {r.diff:+.4f} [{r.low:+.4f}, {r.high:+.4f}], {p}")
        out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", "--dataset", nargs="+", default=["fashion-mnist"])
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once, each in its own process")
    ap.add_argument("--root", default=None, help="data root (default $CTXSIM_DATA or ./data; icons lives there)")
    ap.add_argument("--out", default=None, help="also write the table and tests to this markdown file")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=None, help="NAME=LOSS[:key=value,...] (repeatable)")
    ap.add_argument("--per-class", action="store_true", help="also test MAP@R per unseen class")
    ap.add_argument("--tuned", action="store_true", help="only the tuned rows (their hybrid is the paired reference)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.root:
        os.environ["CTXSIM_DATA"] = str(Path(args.root).resolve())  # configure() reads the default root
    out = [f"seeds {args.seeds}, {args.threads} CPU thread(s), unseen test classes, "
           "test MAP@R mean ± 95% Student-t half-width over seeds", "",
           "| dataset | method | val MAP@R | test MAP@R | R@1 | train loss first → last fifth | s / run |",
           "|---|---|---|---|---|---|---|"]
    tests: list[str] = []
    for ds in args.datasets:
        if args.variant:
            variants = dict(parse_variant(v) for v in args.variant)
        else:
            variants = dict((ICONS_TUNED if args.tuned else ICONS_VARIANTS) if ds == "icons"
                            else (TUNED_VARIANTS if args.tuned else DEFAULT_VARIANTS))
        rows, per_query, labels = run_dataset(ds, args.seeds, variants, jobs=args.jobs, threads=args.threads)
        for name, m, r, f, t, v in rows:
            curve = (f"{statistics.mean(a for a, _ in f):.3f} → {statistics.mean(b for _, b in f):.3f}" if f else "-")
            val = _interval(v) if v and not any(np.isnan(v)) else "-"
            out.append(f"| {ds} | {name} | {val} | {_interval(m)} | {_interval(r)} | {curve} | "
                       f"{statistics.mean(t):.1f} |")
        tests += ["", f"{ds}:"] + paired_lines(per_query, variants)
        if args.per_class:
            tests += [""] + per_class_lines(per_query, labels)
    text = "\n".join(out + tests)
    print(text)
    if args.out:
        dest = Path(args.out)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, dest)


if __name__ == "__main__":
    main()
