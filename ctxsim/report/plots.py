"""PNG learning curves (matplotlib, no pyplot state, Agg rendering): per run and overlaid per dataset.

Every figure has a fixed size in pixels (``RUN_SIZE`` / ``OVERLAY_SIZE``): no tight bounding box.
The reference implementation's test R@1 every 5 epochs (paper-results.csv kind
``reference_log_curve``, reference-implementation §6.1) is drawn where one is known for the run's dataset, loss and
resolution.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from ctxsim.registry.states import JobStatus

DPI = 100
RUN_SIZE = (1200, 450)  # pixels (width, height)
OVERLAY_SIZE = (1200, 450)
_RK = re.compile(r"^R@(\d+)$")


def _figure(size: tuple[int, int]):
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def save_png(fig, path: str | os.PathLike) -> Path:
    """Writes a figure atomically (temp file + rename) at the module's DPI; returns the path."""
    from ctxsim.files import atomic_write

    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return Path(path)


def paper_curve(reg, dataset: str, loss: str, resolution: Optional[int]) -> tuple[list[tuple[int, float]], Optional[str]]:
    """([(epoch, R@1 percent)], source) of the reference learning curve, or ([], None) if unknown.

    ``source`` is the provenance common to the curve's points (the per-epoch detail dropped)."""
    from ctxsim.baselines import curve_epoch, list_baselines

    rows = [
        r for r in list_baselines(reg, dataset=dataset, resolution=resolution, method=loss,
                                  kinds=("reference_log_curve",))
        if r["metric"].startswith("R@1@") and curve_epoch(r["metric"]) is not None
        and (resolution is None or r["resolution"] in (None, resolution))
    ]
    pts = sorted((curve_epoch(r["metric"]), r["value"]) for r in rows)
    src = re.sub(r",?\s*test R@1 at epoch \d+", "", rows[0]["source"]) if rows else None
    return pts, src


def _steps_per_epoch(series: dict[str, list[tuple[int, float]]]) -> Optional[float]:
    """Estimated from the last step and the last completed epoch."""
    train, ep = series.get("train/loss"), series.get("epoch/loss")
    if train and ep and ep[-1][0] > 0:
        return max(1.0, train[-1][0] / ep[-1][0])
    return None


def _eval_keys(series: dict[str, list[tuple[int, float]]]) -> list[str]:
    rk = sorted((k for k in series if _RK.match(k)), key=lambda k: int(_RK.match(k).group(1)))
    return rk + [k for k in ("MAP@R", "RP") if k in series]


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _run_label(job: dict[str, Any]) -> str:
    seed = f" seed {job['seed']}" if job.get("seed") is not None else ""
    res = f" {job['resolution']}" if job.get("resolution") else ""
    return f"#{job['id']} {job['loss']}{res}{seed}"


def _draw_loss(ax, series, label_prefix: str = "", color=None, raw: bool = True) -> None:
    spe = _steps_per_epoch(series)
    train = series.get("train/loss") or []
    if train and raw:
        xs = [s / spe for s, _ in train] if spe else [s for s, _ in train]
        ax.plot(xs, [v for _, v in train], lw=0.6, alpha=0.35, color=color or "tab:blue",
                label=f"{label_prefix}train/loss (per step)")
    ep = series.get("epoch/loss") or []
    if ep:
        ax.plot([e for e, _ in ep], [v for _, v in ep], marker="o", ms=3, lw=1.5, color=color or "tab:blue",
                label=f"{label_prefix}epoch mean" if raw else label_prefix.strip() or "epoch mean")
    ax.set_xlabel("epoch" if (spe or not train) else "step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)


def plot_run(path, job: dict[str, Any], series: dict[str, list[tuple[int, float]]],
             paper: Sequence[tuple[int, float]] = (), paper_source: Optional[str] = None) -> Path:
    """One run: loss (per step and per epoch) and R@K / MAP@R per evaluation, in percent, with the
    paper's R@1 curve dashed. Size ``RUN_SIZE`` pixels."""
    fig = _figure(RUN_SIZE)
    ax_loss, ax_eval = fig.subplots(1, 2)
    _draw_loss(ax_loss, series)
    ax_loss.set_title("loss")
    if ax_loss.has_data():
        ax_loss.legend(fontsize=8)
    for key in _eval_keys(series):
        pts = series[key]
        ax_eval.plot([e for e, _ in pts], [100 * v for _, v in pts], marker="o", ms=3, label=key)
    if paper:
        ax_eval.plot([e for e, _ in paper], [v for _, v in paper], "k--", marker="x", ms=4, lw=1,
                     label="paper R@1 (reference log)")
    ax_eval.set_title("retrieval (percent)")
    _integer_epochs(ax_eval)
    ax_eval.set_xlabel("epoch")
    ax_eval.set_ylabel("%")
    ax_eval.grid(alpha=0.3)
    if ax_eval.has_data():
        ax_eval.legend(fontsize=8)
    else:
        ax_eval.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_eval.transAxes)
    title = f"{_run_label(job)} on {job['dataset']} ({job.get('status', '')})"
    if job.get("name"):
        title += f" — {job['name']}"
    fig.suptitle(title, fontsize=11)
    return save_png(fig, path)


def plot_overlay(path, runs: Sequence[tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]],
                 papers: Sequence[tuple[str, Sequence[tuple[int, float]]]] = (), metric: str = "R@1",
                 title: str = "") -> Path:
    """Several runs overlaid: epoch-mean loss and ``metric`` (percent) per epoch, paper curves dashed.
    Size ``OVERLAY_SIZE`` pixels."""
    from matplotlib import colormaps

    fig = _figure(OVERLAY_SIZE)
    ax_loss, ax_eval = fig.subplots(1, 2)
    cmap = colormaps["tab10"]
    for i, (job, series) in enumerate(runs):
        color = cmap(i % 10)
        _draw_loss(ax_loss, series, label_prefix=_run_label(job) + " ", color=color, raw=False)
        pts = series.get(metric) or []
        if pts:
            ax_eval.plot([e for e, _ in pts], [100 * v for _, v in pts], marker="o", ms=3, color=color,
                         label=_run_label(job))
    for label, pts in papers:
        if pts:
            ax_eval.plot([e for e, _ in pts], [v for _, v in pts], "--", marker="x", ms=4, lw=1,
                         color="0.2", label=label)
    ax_loss.set_title("epoch-mean loss")
    ax_eval.set_title(f"{metric} (percent)")
    _integer_epochs(ax_eval)
    ax_eval.set_xlabel("epoch")
    ax_eval.set_ylabel("%")
    ax_eval.grid(alpha=0.3)
    for ax in (ax_loss, ax_eval):
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return save_png(fig, path)


def write_report(reg, out_dir, ids: Optional[Sequence[int]] = None, dataset: Optional[str] = None,
                 loss: Optional[str] = None, statuses: Sequence[str] = (JobStatus.DONE,)) -> dict[str, Any]:
    """Writes ``run-<id>.png`` per run, ``compare-<dataset>.png`` per dataset with several runs and an
    ``index.md`` (comparison table + pictures) into ``out_dir``.

    ``ids``: those jobs whatever their status (NotFoundError names missing ones); otherwise every job
    with one of ``statuses`` matching ``dataset``/``loss``. Returns {"out", "runs", "files"}.
    """
    from ctxsim.baselines import display_method
    from ctxsim.registry.queries import metric_series, runs_table
    from ctxsim.report.compare import NotFoundError, compare_rows
    from ctxsim.report.render import to_markdown

    out = Path(out_dir)
    jobs = runs_table(reg, status=None if ids else statuses, dataset=dataset, loss=loss,
                      ids=list(ids) if ids else None, summary_keys=())
    if ids:
        missing = sorted(set(ids) - {j["id"] for j in jobs})
        if missing:
            raise NotFoundError("no such job: " + ", ".join(str(i) for i in missing))
    jobs.sort(key=lambda j: j["id"])
    files: list[str] = []
    curves: dict[tuple, tuple[list, Optional[str]]] = {}
    by_ds: dict[str, list] = {}
    for job in jobs:
        series = metric_series(reg, job["id"])
        ck = (job["dataset"], job["loss"], job["resolution"])
        if ck not in curves:
            curves[ck] = paper_curve(reg, *ck)
        pts, src = curves[ck]
        files.append(str(plot_run(out / f"run-{job['id']}.png", job, series, pts, src)))
        by_ds.setdefault(job["dataset"], []).append((job, series))
    for ds, runs in by_ds.items():
        if len(runs) < 2:
            continue
        papers = []
        for (d, ls, res), (pts, _src) in sorted(curves.items(), key=lambda kv: str(kv[0])):
            if d == ds and pts:
                papers.append((f"paper {display_method(ls)} {res or ''} R@1 (reference log)".replace("  ", " "), pts))
        files.append(str(plot_overlay(out / f"compare-{ds}.png", runs, papers, title=f"{ds}: runs overlaid")))
    if jobs:
        rows = compare_rows(reg, ids=[j["id"] for j in jobs])
        lines = ["# ctxsim report", ""]
        if rows:
            lines += ["## Runs vs reference numbers", "", to_markdown(rows).rstrip(), ""]
        srcs = sorted({f"{display_method(k[1])} {k[0]} {k[2] or ''}: {v[1]}" for k, v in curves.items() if v[1]})
        lines += ["## Curves", ""]
        if srcs:
            lines += ["Dashed: the paper's learning curve (test R@1 every 5 epochs) from"]
            lines += [f"- {s}" for s in srcs] + [""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in files]
        index = out / "index.md"
        tmp = index.with_name(f".{index.name}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, index)
        files.append(str(index))
    return {"out": str(out), "runs": [j["id"] for j in jobs], "files": files}
