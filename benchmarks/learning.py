"""Does training transfer? Retrieval on the UNSEEN test classes of the small-data recipes.

For fashion-mnist and digits (train classes 0-4, retrieval among 5-9, query == gallery): raw
L2-normalised pixels, the untrained network of each seed, and the recipe trained with hybrid,
contrastive and multisimilarity (ctxsim.train.fit, the product's own code path), seeds 0,1,2.
Prints a markdown table of MAP@R and R@1 (mean ± std over seeds) and the mean wall time per run.

    python benchmarks/learning.py [--datasets fashion-mnist digits] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

LOSSES = ("hybrid", "contrastive", "multisimilarity")


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def run_dataset(dataset: str, seeds: list[int], losses: tuple[str, ...]) -> list[tuple[str, list, list, list]]:
    """Rows (method, MAP@R per seed, R@1 per seed, seconds per seed)."""
    from ctxsim.eval import evaluate_bundle, retrieval_metrics
    from ctxsim.train import fit, recipe
    from ctxsim.train.build import build_run_data, build_run_model, seed_everything

    base = recipe(dataset, "hybrid", 256).with_overrides(device="cpu", num_workers=0)
    data = build_run_data(base)
    x = data.query.images.flatten(1).float()  # the uint8 test images as stored
    labels = torch.as_tensor(data.query.labels)
    t0 = time.perf_counter()
    raw = retrieval_metrics(torch.nn.functional.normalize(x, dim=1), labels, ks=data.ks)
    rows = [("raw pixels (L2)", [raw["MAP@R"]], [raw["R@1"]], [time.perf_counter() - t0])]
    m_u, r_u, t_u = [], [], []
    for seed in seeds:
        t0 = time.perf_counter()
        seed_everything(seed)  # the initial weights fit() builds for this seed
        u = evaluate_bundle(build_run_model(base.with_overrides(seed=seed), data.in_channels), data, "cpu", batch_size=512)
        m_u.append(u["MAP@R"]), r_u.append(u["R@1"]), t_u.append(time.perf_counter() - t0)
    rows.append((f"untrained {base.model.arch}", m_u, r_u, t_u))
    for loss in losses:
        ms, rs, ts = [], [], []
        for seed in seeds:
            cfg = recipe(dataset, loss, 256).with_overrides(device="cpu", num_workers=0, seed=seed)
            t0 = time.perf_counter()
            res = fit(cfg)
            ts.append(time.perf_counter() - t0)
            ms.append(res.metrics["MAP@R"]), rs.append(res.metrics["R@1"])
            print(f"  {dataset} {loss} seed {seed}: MAP@R {ms[-1]:.3f} R@1 {rs[-1]:.3f} ({ts[-1]:.0f}s)", flush=True)
        rows.append((loss, ms, rs, ts))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist", "digits"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--losses", nargs="+", default=list(LOSSES))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = [f"seeds {args.seeds}, {args.threads} CPU thread(s), unseen test classes, recipe = ctxsim.train.recipe(dataset, loss, 256)", "",
           "| dataset | method | MAP@R | R@1 | s / run |", "|---|---|---|---|---|"]
    for ds in args.datasets:
        for name, m, r, t in run_dataset(ds, args.seeds, tuple(args.losses)):
            out.append(f"| {ds} | {name} | {_fmt(m)} | {_fmt(r)} | {statistics.mean(t):.1f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
