"""Reference numbers keyed by ctxsim loss name: what the dashboard and ``ctxsim compare`` show
beside a run (a number with its provenance, and the reference learning curve)."""

from __future__ import annotations

from typing import Any, Optional

from ctxsim.baselines import FINAL_KIND_PRIORITY, list_baselines


def paper_numbers(reg) -> dict[tuple[str, str, Optional[int], str], dict[str, Any]]:
    """The reference number of each (dataset, loss, resolution, metric), keyed by ctxsim loss name.

    Methods are mapped to losses with ``ctxsim.baselines.loss_for_method`` (rows of other papers'
    methods are left out); of several rows for one key, the kind first in
    ``ctxsim.baselines.FINAL_KIND_PRIORITY`` wins. Values are percentages, as stored.
    """
    rank = {k: i for i, k in enumerate(FINAL_KIND_PRIORITY)}
    out: dict[tuple[str, str, Optional[int], str], dict[str, Any]] = {}
    for b in list_baselines(reg, kinds=FINAL_KIND_PRIORITY):
        loss = b["loss"]
        if loss is None:
            continue
        key = (b["dataset"], loss, b["resolution"], b["metric"])
        old = out.get(key)
        if old is None or rank[b["kind"]] < rank[old["kind"]]:
            out[key] = {k: b[k] for k in ("value", "kind", "source", "method", "origin")}
    return out


def paper_number(
    reg, dataset: str, loss: str, resolution: Optional[int], metric: str = "R@1"
) -> Optional[dict[str, Any]]:
    """The reference number (percent) for a dataset/loss/resolution/metric with its provenance, or None."""
    return paper_numbers(reg).get((dataset, loss, resolution, metric))


def paper_curve(
    reg, dataset: str, loss: str, resolution: Optional[int], metric: str = "R@1"
) -> list[tuple[int, float]]:
    """The reference learning curve (Baseline kind reference_log_curve, metric "R@1@epoch{E}") of a
    dataset/loss/resolution as (epoch, percent) sorted by epoch; empty when none is stored."""
    prefix = f"{metric}@epoch"
    pts = {}
    for b in list_baselines(reg, dataset=dataset, kinds=("reference_log_curve",)):
        tail = b["metric"][len(prefix):] if b["metric"].startswith(prefix) else ""
        if b["resolution"] == resolution and tail.isdigit() and b["loss"] == loss:
            pts[int(tail)] = float(b["value"])
    return sorted(pts.items())
