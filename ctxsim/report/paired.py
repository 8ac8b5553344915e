"""``ctxsim compare --test A B``: which runs A and B name, their per-query results, and the paired
bootstrap of A - B (``ctxsim.report.stats.paired_bootstrap``) with its terminal lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

from ctxsim.errors import NotFoundError
from ctxsim.registry.states import JobStatus
from ctxsim.report.compare import _variants, gather_runs

_GROUP_SPEC = re.compile(r"^([^/\s]+)/([^/\s]+)/(\d+)$")

def resolve_runs(reg, spec: str) -> list[dict[str, Any]]:
    """The finished runs a ``compare --test`` argument names: a job id (``12``) or a cell
    ``dataset/loss/resolution`` (``cub/hybrid/256``: its finished runs, which must share one config
    up to the seed). ConfigError for a bad spelling or a cell with several config variants,
    NotFoundError for a job or cell without finished runs."""
    from ctxsim.errors import ConfigError
    from ctxsim.names import canonical_dataset, canonical_loss

    spec = str(spec).strip()
    if spec.isdigit():
        jobs = gather_runs(reg, ids=[int(spec)])
        if jobs[0]["status"] != JobStatus.DONE:
            raise NotFoundError(f"job {spec} has not finished ({jobs[0]['status']})")
        return jobs
    m = _GROUP_SPEC.match(spec)
    if not m:
        raise ConfigError(f"{spec!r} is neither a job id nor a group dataset/loss/resolution (cub/hybrid/256)")
    ds, loss, res = canonical_dataset(m.group(1)), canonical_loss(m.group(2)), int(m.group(3))
    jobs = gather_runs(reg, dataset=ds, loss=loss, resolution=res)
    if not jobs:
        raise NotFoundError(f"no finished runs of {ds}/{loss}/{res}")
    variants = _variants(jobs)
    if len(set(variants.values())) > 1:
        by: dict[str, list[int]] = {}
        for j in jobs:
            by.setdefault(variants[j["id"]], []).append(j["id"])
        listed = "; ".join(f"{v}: {' '.join(map(str, ids))}" for v, ids in by.items())
        raise ConfigError(f"{ds}/{loss}/{res} has runs of several configs ({listed}); name the job ids")
    return jobs


def _per_query_path(job: dict[str, Any]) -> Optional[Path]:
    from ctxsim.eval.per_query import PER_QUERY_NAME

    p = (job.get("done") or {}).get("per_query")
    if p:
        return Path(p)
    return Path(job["run_dir"]) / PER_QUERY_NAME if job.get("run_dir") else None


def per_query_values(jobs: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    """``({"R@1": hit@1, "MAP@R": AP@R}`` as seeds × queries arrays, query labels) of finished runs
    evaluated on one query set; lone queries (no same-label gallery item) are left out, as R@1 and
    MAP@R leave them out. NotFoundError for a run without per-query results, DataError when the runs
    were evaluated on different query sets."""
    import numpy as np

    from ctxsim.errors import DataError
    from ctxsim.eval.per_query import load_per_query

    pqs = []
    for j in jobs:
        path = _per_query_path(j)
        if path is None or not path.is_file():
            raise NotFoundError(f"job {j['id']} has no per-query results ({path or 'no run folder'}); "
                                "runs record them at their final evaluation")
        pqs.append(load_per_query(path))
    first = pqs[0]
    for j, pq in zip(jobs[1:], pqs[1:]):
        if len(pq) != len(first) or not np.array_equal(pq.labels, first.labels):
            raise DataError(f"job {j['id']} was evaluated on other queries than job {jobs[0]['id']}")
    keep = ~first.lone
    return ({"R@1": np.stack([pq.hit1[keep] for pq in pqs]).astype(np.float64),
             "MAP@R": np.stack([pq.ap_at_r[keep] for pq in pqs]).astype(np.float64)}, first.labels)


def paired_test(reg, a: str, b: str, n_resamples: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
    """``compare --test A B``: the difference A - B in R@1 and MAP@R (percentage points) with a 95%
    paired-bootstrap interval and p-value (``ctxsim.report.stats.paired_bootstrap``: queries resampled
    alike for both sides, seeds too when both sides have several)."""
    import numpy as np

    from ctxsim.errors import DataError
    from ctxsim.report.stats import DEFAULT_RESAMPLES, paired_bootstrap

    runs_a, runs_b = resolve_runs(reg, a), resolve_runs(reg, b)
    va, la = per_query_values(runs_a)
    vb, lb = per_query_values(runs_b)
    if len(la) != len(lb) or not np.array_equal(la, lb):
        raise DataError(f"{a} and {b} were evaluated on different query sets; a paired test needs the same queries")
    results = paired_bootstrap(va, vb, n_resamples=n_resamples or DEFAULT_RESAMPLES, seed=seed)
    out = []
    for r in results:
        d = r.to_dict()
        for k in ("diff", "low", "high", "mean_a", "mean_b"):
            d[k] = 100.0 * d[k]  # percent, like every other number compare prints
        out.append(d)
    return {"a": {"spec": a, "run_ids": [j["id"] for j in runs_a], "seeds": [j["seed"] for j in runs_a]},
            "b": {"spec": b, "run_ids": [j["id"] for j in runs_b], "seeds": [j["seed"] for j in runs_b]},
            "confidence": 0.95, "seed": seed, "metrics": out}


def format_paired_test(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal: one per metric."""
    a, b = result["a"], result["b"]
    lines = [f"A = {a['spec']} (runs {' '.join(map(str, a['run_ids']))}), "
             f"B = {b['spec']} (runs {' '.join(map(str, b['run_ids']))})"]
    for m in result["metrics"]:
        p = m["p_value"]
        p_text = f"p < {1 / m['n_resamples']:.1g}" if p == 0 else f"p = {p:.3g}"
        lines.append(
            f"{m['metric']}: A {m['mean_a']:.2f}, B {m['mean_b']:.2f}, A - B {m['diff']:+.2f} pp, "
            f"95% CI [{m['low']:+.2f}, {m['high']:+.2f}], {p_text} "
            f"(paired bootstrap over {m['n_queries']:,} queries"
            + (f" and seeds {m['n_seeds_a']} vs {m['n_seeds_b']}" if m["seeds_resampled"] else "")
            + f", {m['n_resamples']:,} resamples)"
        )
    return lines
