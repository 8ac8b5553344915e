"""Runs versus reference numbers: one row per dataset / loss / resolution (/ config variant) / metric.

Runs store metrics as fractions (0..1); reference numbers are percentages. Everything this module
returns is in percent (``to_percent`` is the one conversion). Delta = mean final - paper, in
percentage points. Runs whose reported model was chosen by its test-set score (the reference's
``main.py`` habit, seed-spec §3.2 and §9.6) are flagged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ctxsim import DATASETS
from ctxsim.baselines import FINAL_KIND_PRIORITY, display_method, list_baselines
from ctxsim.errors import CtxsimError

MISSING = "—"
NUMERIC_COLUMNS = {"Res.", "Runs", "n", "Final", "Best", "Paper", "Δ (pp)", "Δ", "Paper best", "Δ best"}
TEST_SELECTED_MARK = "†"
_EVAL_KEY = re.compile(r"^(R@\d+|MAP@R|RP|mAP)$")
# config keys that do not change what a run measures (grouping ignores them; seeds are pooled)
_IGNORED_CONFIG_KEYS = {
    "seed", "name", "run_dir", "out", "out_dir", "output_dir", "device", "root", "data_root",
    "num_workers", "workers", "tags", "tag", "gpus", "detach", "notes", "progress", "log_every",
    "eval_batch_size",
}
CSV_FIELDS = (
    "dataset", "loss", "method", "resolution", "variant", "metric", "n", "run_ids", "seeds",
    "final_mean", "final_std", "best_mean", "best_std", "test_selected",
    "paper", "paper_kind", "paper_method", "paper_source", "paper_origin", "delta",
    "paper_best", "paper_best_source", "delta_best",
)


class NotFoundError(CtxsimError):
    """Some requested job ids do not exist."""


def to_percent(fraction: Optional[float]) -> Optional[float]:
    """A stored metric (fraction 0..1) as a percentage."""
    return None if fraction is None else 100.0 * float(fraction)


def metric_sort_key(key: str) -> tuple:
    m = re.match(r"^R@(\d+)$", key)
    if m:
        return (0, int(m.group(1)), key)
    return (1, {"MAP@R": 0, "RP": 1, "mAP": 2}.get(key, 9), key)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_items(config_json: Optional[str]) -> dict[str, str]:
    try:
        cfg = json.loads(config_json or "{}")
    except (TypeError, ValueError):
        return {}
    flat = _flatten(cfg)
    return {
        k: json.dumps(v, sort_keys=True, default=str)
        for k, v in flat.items()
        if k.rsplit(".", 1)[-1] not in _IGNORED_CONFIG_KEYS
    }


def _parse_done(messages: Sequence[str]) -> tuple[Optional[dict[str, Any]], bool]:
    """(data, exact) of a job's last ``done`` event as stored by the registry sink.

    The message is JSON (exact) or ``key=value`` tokens such as ``R@1=0.6870 selected=best
    selected_on=test`` (metrics rounded by the sink: not exact).
    """
    for msg in reversed(messages):
        try:
            d = json.loads(msg)
        except (TypeError, ValueError):
            d = None
        if isinstance(d, dict):
            return (d["data"] if isinstance(d.get("data"), dict) else d), True
        pairs = dict(t.split("=", 1) for t in (msg or "").split() if "=" in t)
        if not pairs:
            continue
        data: dict[str, Any] = {"metrics": {}}
        for k, v in pairs.items():
            if k in ("selected", "selected_on", "best_epoch"):
                data[k] = None if v in ("None", "null", "") else v
            else:
                try:
                    data["metrics"][k] = float(v)
                except ValueError:
                    continue
        return data, False
    return None, False


def _done_from_run_dir(run_dir: Optional[str]) -> Optional[dict[str, Any]]:
    """Fallback: the last ``done`` event of ``<run_dir>/events.jsonl``."""
    if not run_dir:
        return None
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return None
    from ctxsim.train.events import read_events

    done = [e for e in read_events(path) if e.kind == "done"]
    return dict(done[-1].data) if done else None


def selected_on_test(done: Optional[dict[str, Any]], config_items: Optional[dict[str, str]] = None) -> bool:
    """True when the run reported its best checkpoint, picked by its score on the test set.

    From the ``done`` event (selected="best", selected_on="test"); without one, from the run's
    config (``select="best"``: ctxsim evaluates on the test split, as the reference does, §9.6).
    """
    if done and done.get("selected"):
        return done.get("selected") == "best" and done.get("selected_on") == "test"
    return (config_items or {}).get("select") == json.dumps("best")


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)  # sample std (n-1) over seeds


def _pick_reference(
    refs: list[dict[str, Any]], loss: str, resolution: Optional[int], metric: str, kinds: Iterable[str]
) -> Optional[dict[str, Any]]:
    """The reference number for (loss, resolution, metric): exact resolution before resolution-less
    rows, then kind priority (order of ``kinds``), then the newest import."""
    kinds = list(kinds)
    cands = [
        r for r in refs
        if r["loss"] == loss and r["metric"] == metric and r["kind"] in kinds
        and (r["resolution"] is None or r["resolution"] == resolution)
    ]
    if not cands:
        return None
    return min(
        cands,
        key=lambda r: (
            r["resolution"] is None, kinds.index(r["kind"]), r["origin"] != "imported", -r["id"]
        ),
    )


def gather_runs(
    reg,
    ids: Optional[Sequence[int]] = None,
    dataset: Optional[str] = None,
    loss: Optional[str] = None,
    resolution: Optional[int] = None,
    statuses: Optional[Sequence[str]] = ("done",),
) -> list[dict[str, Any]]:
    """Jobs (by id, else by filter and status) with their summaries, config and done-event data.

    Raises NotFoundError naming ids that do not exist.
    """
    from ctxsim.registry.queries import job_configs, job_event_messages, runs_table

    jobs = runs_table(
        reg, status=None if ids else statuses, dataset=dataset, loss=loss, resolution=resolution,
        ids=list(ids) if ids else None, summary_keys=(),
    )
    if ids:
        missing = sorted(set(ids) - {j["id"] for j in jobs})
        if missing:
            raise NotFoundError("no such job: " + ", ".join(str(i) for i in missing))
    job_ids = [j["id"] for j in jobs]
    configs = job_configs(reg, job_ids)
    dones = job_event_messages(reg, job_ids, "done")
    for j in jobs:
        j["config_items"] = _config_items(configs.get(j["id"]))
        done, exact = _parse_done(dones.get(j["id"], []))
        if not exact:  # the run's own event file has exact values and the selection, when reachable
            done = _done_from_run_dir(j.get("run_dir")) or done
        j["done"] = done
        j["selected_on_test"] = selected_on_test(done, j["config_items"])
    return sorted(jobs, key=lambda j: j["id"])


def _variants(jobs: list[dict[str, Any]]) -> dict[int, str]:
    """job id -> a short label of the config keys that set it apart within its dataset/loss/resolution."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for j in jobs:
        groups.setdefault((j["dataset"], j["loss"], j["resolution"]), []).append(j)
    out: dict[int, str] = {}
    for members in groups.values():
        sigs = {json.dumps(j["config_items"], sort_keys=True) for j in members}
        if len(sigs) <= 1:
            out.update({j["id"]: "" for j in members})
            continue
        keys = sorted(set().union(*(j["config_items"] for j in members)))
        differing = [k for k in keys if len({j["config_items"].get(k) for j in members}) > 1]
        for j in members:
            out[j["id"]] = " ".join(
                f"{k}={json.loads(j['config_items'][k]) if k in j['config_items'] else '-'}"
                for k in differing
            )
    return out


def compare_rows(
    reg,
    ids: Optional[Sequence[int]] = None,
    dataset: Optional[str] = None,
    loss: Optional[str] = None,
    resolution: Optional[int] = None,
    metrics: Optional[Sequence[str]] = None,
    statuses: Optional[Sequence[str]] = ("done",),
) -> list[dict[str, Any]]:
    """Comparison rows (all values in percent): runs' final and best (mean, sample std over seeds),
    the reference number with kind/source/origin, and delta = final mean - paper (pp).

    ``final`` is the metric of the run's ``done`` event (what the run reported, possibly the
    reloaded best checkpoint), else its last evaluation; ``best`` is the maximum over evaluations.
    """
    jobs = gather_runs(reg, ids, dataset, loss, resolution, statuses)
    variants = _variants(jobs)
    refs_by_ds: dict[str, list[dict[str, Any]]] = {}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for j in jobs:
        groups.setdefault((j["dataset"], j["loss"], j["resolution"], variants[j["id"]]), []).append(j)
    rows = []
    for (ds, ls, res, variant), members in groups.items():
        if ds not in refs_by_ds:
            refs_by_ds[ds] = list_baselines(reg, dataset=ds)
        refs = refs_by_ds[ds]
        keys = set(metrics) if metrics else {
            k for j in members for k in list(j["summaries"]) + list((j["done"] or {}).get("metrics") or {})
            if _EVAL_KEY.match(k)
        }
        for metric in sorted(keys, key=metric_sort_key):
            finals, bests, run_ids, seeds, n_test = [], [], [], [], 0
            for j in members:
                s = j["summaries"].get(metric)
                done_m = ((j["done"] or {}).get("metrics") or {}).get(metric)
                final = done_m if done_m is not None else (s["last"] if s else None)
                if final is None:
                    continue
                best = s["best"] if s else final
                finals.append(to_percent(final))
                bests.append(to_percent(max(best, final)))
                run_ids.append(j["id"])
                seeds.append(j["seed"])
                n_test += int(j["selected_on_test"])
            if not run_ids:
                continue
            fm, fs = _mean_std(finals)
            bm, bs = _mean_std(bests)
            ref = _pick_reference(refs, ls, res, metric, FINAL_KIND_PRIORITY)
            ref_best = _pick_reference(refs, ls, res, metric, ("reference_log_best",))
            rows.append({
                "dataset": ds, "loss": ls, "method": display_method(ls), "resolution": res,
                "variant": variant, "metric": metric, "n": len(run_ids), "run_ids": run_ids,
                "seeds": seeds, "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs,
                "finals": finals, "bests": bests, "test_selected": n_test,
                "paper": ref["value"] if ref else None,
                "paper_kind": ref["kind"] if ref else None,
                "paper_method": ref["method"] if ref else None,
                "paper_source": ref["source"] if ref else None,
                "paper_origin": ref["origin"] if ref else None,
                "delta": (fm - ref["value"]) if ref else None,
                "paper_best": ref_best["value"] if ref_best else None,
                "paper_best_source": ref_best["source"] if ref_best else None,
                "delta_best": (bm - ref_best["value"]) if ref_best else None,
            })
    ds_order = {d: i for i, d in enumerate(DATASETS)}
    rows.sort(key=lambda r: (
        ds_order.get(r["dataset"], 99), r["dataset"], r["resolution"] or 0, r["loss"] != "hybrid",
        r["loss"], r["variant"], metric_sort_key(r["metric"]),
    ))
    return rows


# --- text renderings (the CLI prints them; the report writes them) ------------------------------


def fmt_value(v: Optional[float], digits: int = 2) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def fmt_paper(v: Optional[float]) -> str:
    """A reference number as stored (up to 3 decimals, no trailing zeros beyond one)."""
    if v is None:
        return MISSING
    s = f"{v:.3f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def fmt_delta(v: Optional[float]) -> str:
    return MISSING if v is None else f"{v:+.2f}"


def fmt_mean_std(mean: Optional[float], std: Optional[float], mark: str = "") -> str:
    if mean is None:
        return MISSING
    s = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return f"{s} {mark}" if mark else s


def display_table(rows: list[dict[str, Any]], compact: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells, footnotes) shared by the terminal table (``compact``) and markdown.

    Sources become numbered footnotes so that cells stay short.
    """
    with_variant = any(r["variant"] for r in rows)
    with_best_ref = any(r["paper_best"] is not None for r in rows)
    sources: list[str] = []

    def ref(src: Optional[str]) -> str:
        if not src:
            return MISSING
        if src not in sources:
            sources.append(src)
        return f"[{sources.index(src) + 1}]"

    if compact:
        header = ["Run group"] + (["Variant"] if with_variant else []) + [
            "Metric", "n", "Final", "Best", "Paper", "Δ", "Provenance"]
        header += ["Paper best", "Δ best"] if with_best_ref else []
    else:
        header = ["Dataset", "Loss", "Res."] + (["Variant"] if with_variant else []) + [
            "Metric", "Runs", "Final", "Best", "Paper", "Δ (pp)", "Kind", "Src"]
        header += ["Paper best", "Δ best", "Src best"] if with_best_ref else []
    cells = []
    for r in rows:
        mark = TEST_SELECTED_MARK if r["test_selected"] else ""
        res = str(r["resolution"] or MISSING)
        if compact:
            line = [f"{r['dataset']} {r['loss']} {res}"]
        else:
            line = [r["dataset"], r["loss"], res]
        if with_variant:
            line.append(r["variant"] or MISSING)
        line += [
            r["metric"], str(r["n"]), fmt_mean_std(r["final_mean"], r["final_std"], mark),
            fmt_mean_std(r["best_mean"], r["best_std"]), fmt_paper(r["paper"]), fmt_delta(r["delta"]),
        ]
        if compact:
            line.append(f"{r['paper_kind']} {ref(r['paper_source'])}" if r["paper_kind"] else MISSING)
            if with_best_ref:
                best = fmt_paper(r["paper_best"])
                line += [best if r["paper_best"] is None else f"{best} {ref(r['paper_best_source'])}",
                         fmt_delta(r["delta_best"])]
        else:
            line += [r["paper_kind"] or MISSING, ref(r["paper_source"])]
            if with_best_ref:
                line += [fmt_paper(r["paper_best"]), fmt_delta(r["delta_best"]), ref(r["paper_best_source"])]
        cells.append(line)
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    notes.append(
        "Values in percent; ± = sample std over seeds; Final = what the run reported (else its last "
        "evaluation); Best = maximum over evaluations during training; Δ = Final - Paper in "
        f"percentage points; {MISSING} = no reference number."
    )
    if with_best_ref:
        notes.append("Paper best = the reference log's best test R@1 during training; Δ best = Best - Paper best.")
    if any(r["test_selected"] for r in rows):
        notes.append(f"{TEST_SELECTED_MARK} the reported model was selected on the test set (seed-spec §9.6).")
    return header, cells, notes


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured markdown table plus numbered source notes; pastes into a README as is."""
    header, cells, notes = display_table(rows)
    numeric = NUMERIC_COLUMNS
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if h in numeric else "---" for h in header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in line) + " |" for line in cells]
    out.append("")
    out += [_md_cell(n) + "  " for n in notes]  # two trailing spaces: markdown line breaks
    return "\n".join(out).rstrip() + "\n"


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join("" if x is None else str(x) for x in v)
    if isinstance(v, float):
        return repr(round(v, 6)) if math.isfinite(v) else ""
    return v


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One CSV line per row, full sources, percent values, empty cells for missing numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow([_csv_value(r.get(f)) for f in CSV_FIELDS])
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str, ensure_ascii=False) + "\n"
