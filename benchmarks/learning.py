"""Does training transfer? Test MAP@R on the UNSEEN classes of the small-data recipes, over seeds.

For fashion-mnist and digits (train classes 0-4, retrieval among 5-9, query == gallery): raw
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

    python benchmarks/learning.py [--datasets fashion-mnist] [--seeds 0 1 2] [--threads 1]
        [--variant "hybrid (centred ctx grad)=hybrid:loss.ctx_center_grad=true"] [--tuned] [--per-class]

``--tuned``: only the equal-budget tuned rows; ``--per-class``: also test MAP@R per unseen class.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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


def run_dataset(dataset: str, seeds: list[int], variants: dict[str, tuple[str, list[str]]]) -> tuple[list, dict, dict]:
    """Rows (method, MAP@R per seed, R@1 per seed, (first, last) loss fifths per seed, seconds per seed,
    the last validation MAP@R per seed of runs with val_classes); the per-query test values (seeds x
    queries) of each trained variant; and the labels of those queries."""
    from ctxsim.eval import evaluate_bundle, retrieval_metrics
    from ctxsim.eval.per_query import load_per_query
    from ctxsim.train import fit
    from ctxsim.train.build import build_run_data, build_run_model, seed_everything
    from ctxsim.train.configure import configure
    from ctxsim.train.events import ListSink

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
    per_query: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for name, (loss, sets) in variants.items():
        ms, rs, fs, ts, pq, vs = [], [], [], [], [], []
        for seed in seeds:
            cfg = configure(dataset, loss, 256, sets=["device=cpu", "num_workers=0", *sets], seed=seed)
            sink = ListSink()
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                res = fit(cfg, sink=sink, run_dir=tmp)
                ts.append(time.perf_counter() - t0)
                q = load_per_query(Path(tmp) / "per_query.npz")
            pq.append(q.ap_at_r[~q.lone].astype(np.float64))
            labels[name] = np.asarray(q.labels)[~q.lone]  # the same queries for every seed
            ms.append(res.metrics["MAP@R"]), rs.append(res.metrics["R@1"])
            val = [e.data["metrics"]["MAP@R"] for e in sink.events if e.kind == "eval" and e.data.get("split") == "val"]
            vs.append(val[-1] if val else float("nan"))
            fs.append(_fifths([e.data["loss"] for e in sink.events if e.kind == "step"]))
            val_text = "" if np.isnan(vs[-1]) else f"val MAP@R {vs[-1]:.4f} "
            print(f"  {dataset} {name} seed {seed}: {val_text}test MAP@R {ms[-1]:.4f} R@1 {rs[-1]:.3f} loss {fs[-1][0]:.3f} -> "
                  f"{fs[-1][1]:.3f} ({ts[-1]:.0f}s)", flush=True)
        rows.append((name, ms, rs, fs, ts, vs))
        per_query[name] = np.stack(pq)
    return rows, per_query, labels


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
    """The first hybrid variant minus each other variant: MAP@R difference with its 95% paired-bootstrap
    interval and p-value (queries and seeds resampled alike)."""
    from ctxsim.report.stats import paired_bootstrap

    hybrids = [n for n, (loss, _) in variants.items() if loss == "hybrid"]
    if not hybrids:
        return []
    ref = hybrids[0]
    out = [f"paired test, {ref} minus each (MAP@R, 95% bootstrap over queries and seeds):", ""]
    for name in variants:
        if name == ref:
            continue
        r = paired_bootstrap({"MAP@R": per_query[ref]}, {"MAP@R": per_query[name]})[0]
        p = f"p < {1 / r.n_resamples:.4f}" if r.p_value == 0 else f"p {r.p_value:.4f}"
        out.append(f"- vs {name}: {r.diff:+.4f} [{r.low:+.4f}, {r.high:+.4f}], {p}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=None, help="NAME=LOSS[:key=value,...] (repeatable)")
    ap.add_argument("--per-class", action="store_true", help="also test MAP@R per unseen class")
    ap.add_argument("--tuned", action="store_true", help="only the tuned rows (their hybrid is the paired reference)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = dict(parse_variant(v) for v in args.variant) if args.variant else dict(DEFAULT_VARIANTS)
    if args.tuned:
        variants = dict(TUNED_VARIANTS)
    out = [f"seeds {args.seeds}, {args.threads} CPU thread(s), unseen test classes, "
           "test MAP@R mean ± 95% Student-t half-width over seeds", "",
           "| dataset | method | val MAP@R | test MAP@R | R@1 | train loss first → last fifth | s / run |",
           "|---|---|---|---|---|---|---|"]
    tests: list[str] = []
    for ds in args.datasets:
        rows, per_query, labels = run_dataset(ds, args.seeds, variants)
        for name, m, r, f, t, v in rows:
            curve = (f"{statistics.mean(a for a, _ in f):.3f} → {statistics.mean(b for _, b in f):.3f}" if f else "-")
            val = _interval(v) if v and not any(np.isnan(v)) else "-"
            out.append(f"| {ds} | {name} | {val} | {_interval(m)} | {_interval(r)} | {curve} | "
                       f"{statistics.mean(t):.1f} |")
        tests += ["", f"{ds}:"] + paired_lines(per_query, variants)
        if args.per_class:
            tests += [""] + per_class_lines(per_query, labels)
    print("\n".join(out + tests))


if __name__ == "__main__":
    main()
