"""Statistics for comparing runs: Student-t confidence intervals over seeds and a paired bootstrap
over queries (and seeds) of the difference between two run groups.

numpy only (scipy is not a dependency): the t quantiles are a table. Every random draw comes from a
``numpy.random.Generator`` seeded by the caller, so a comparison prints the same numbers twice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

if TYPE_CHECKING:  # numpy is imported by the bootstrap only: `compare` without it starts faster
    import numpy as np

# two-sided 95% Student t quantiles t_{0.975, df} (standard tables, 3 decimals)
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
    18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
    26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
_Z975 = 1.960
DEFAULT_RESAMPLES = 10_000


def t_quantile_975(df: int) -> float:
    """t_{0.975} with ``df`` degrees of freedom (the 95% two-sided quantile): the table's value, linear
    in 1/df between its rows, 1.960 beyond 120."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return _Z975 + (_T975[120] - _Z975) * 120 / df
    lo = max(k for k in _T975 if k < df)
    hi = min(k for k in _T975 if k > df)
    w = (1 / df - 1 / hi) / (1 / lo - 1 / hi)
    return _T975[hi] + w * (_T975[lo] - _T975[hi])


@dataclass(frozen=True)
class SeedSummary:
    """n values (one per seed): mean, sample std (n-1) and the 95% Student-t interval of the mean.

    With one value std, half_width, low and high are None (no spread can be estimated)."""

    n: int
    mean: Optional[float]
    std: Optional[float]
    half_width: Optional[float]
    low: Optional[float]
    high: Optional[float]


def seed_summary(values: Sequence[float]) -> SeedSummary:
    """Mean ± t_{0.975,n-1}·s/√n over seeds (s the sample standard deviation)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return SeedSummary(0, None, None, None, None, None)
    mean = sum(xs) / n
    if n == 1:
        return SeedSummary(1, mean, None, None, None, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    hw = t_quantile_975(n - 1) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, hw, mean - hw, mean + hw)


# --- paired bootstrap -------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """The difference A - B of one metric (mean over seeds of the mean over queries) with its
    bootstrap interval and two-sided p-value for "no difference"."""

    metric: str
    diff: float
    low: float
    high: float
    p_value: float
    mean_a: float
    mean_b: float
    n_queries: int
    n_seeds_a: int
    n_seeds_b: int
    seeds_resampled: bool
    n_resamples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_matrix(name: str, x) -> np.ndarray:
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: expected per-query values as (seeds, queries), got shape {a.shape}")
    return a


def bootstrap_diffs(a, b, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                    resample_seeds: Optional[bool] = None, chunk_cells: int = 4_000_000) -> np.ndarray:
    """The bootstrap distribution of mean(A) - mean(B) for per-query values ``a`` (seeds_a × Q) and
    ``b`` (seeds_b × Q) over the same Q queries in the same order.

    Each resample draws Q query indices with replacement, the same for A and B (paired). Seeds are
    resampled too (each side's own, with replacement: seeds are not paired) when ``resample_seeds``
    is true, by default when both sides have several; otherwise each side is its mean over seeds.
    """
    import numpy as np

    A, B = _as_matrix("A", a), _as_matrix("B", b)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B are evaluated on different query sets ({A.shape[1]} vs {B.shape[1]} queries)")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    if resample_seeds is None:
        resample_seeds = A.shape[0] > 1 and B.shape[0] > 1
    rng = np.random.default_rng(seed)
    q = A.shape[1]
    out = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, chunk_cells // q)
    if not resample_seeds:
        d = A.mean(axis=0) - B.mean(axis=0)
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        idx = rng.integers(0, q, size=(m, q))
        if resample_seeds:
            wa = _seed_weights(rng, A.shape[0], m)  # (m, seeds_a): the share of each seed in the draw
            wb = _seed_weights(rng, B.shape[0], m)
            per_query = wa @ A - wb @ B  # (m, Q)
            out[start:start + m] = np.take_along_axis(per_query, idx, axis=1).mean(axis=1)
        else:
            out[start:start + m] = d[idx].mean(axis=1)
    return out


def _seed_weights(rng: np.random.Generator, n_seeds: int, m: int) -> np.ndarray:
    import numpy as np

    draws = rng.integers(0, n_seeds, size=(m, n_seeds))
    counts = np.stack([(draws == s).sum(axis=1) for s in range(n_seeds)], axis=1)
    return counts / n_seeds


def interval_and_p(diffs: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, p): the percentile interval of a bootstrap distribution and the two-sided p-value
    of "no difference", 2·min(P(d* ≤ 0), P(d* ≥ 0)) capped at 1."""
    import numpy as np

    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    p = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return float(low), float(high), p


def paired_bootstrap(a: Mapping[str, object], b: Mapping[str, object], n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, confidence: float = 0.95,
                     resample_seeds: Optional[bool] = None) -> list[BootstrapResult]:
    """Per metric common to ``a`` and ``b`` (name -> per-query values, seeds × queries; e.g.
    ``{"R@1": hit_at_1, "MAP@R": ap_at_r}``), the difference A - B with its bootstrap interval and
    p-value. Every metric uses the same resampled queries and seeds (one generator per metric,
    seeded alike), so the intervals of R@1 and MAP@R describe the same draws."""
    results = []
    for metric in [k for k in a if k in b]:
        A, B = _as_matrix(f"A {metric}", a[metric]), _as_matrix(f"B {metric}", b[metric])
        rs = A.shape[0] > 1 and B.shape[0] > 1 if resample_seeds is None else resample_seeds
        diffs = bootstrap_diffs(A, B, n_resamples=n_resamples, seed=seed, resample_seeds=rs)
        low, high, p = interval_and_p(diffs, confidence)
        mean_a, mean_b = float(A.mean()), float(B.mean())
        results.append(BootstrapResult(
            metric=metric, diff=mean_a - mean_b, low=low, high=high, p_value=p, mean_a=mean_a, mean_b=mean_b,
            n_queries=A.shape[1], n_seeds_a=A.shape[0], n_seeds_b=B.shape[0], seeds_resampled=bool(rs),
            n_resamples=n_resamples,
        ))
    return results
