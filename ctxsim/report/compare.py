"""Runs versus reference numbers: one row per dataset / loss / resolution (/ config variant) / metric.

Runs store metrics as fractions (0..1); reference numbers are percentages. Everything this module
returns is in percent (``to_percent`` is the one conversion). Delta = mean final - paper, in
percentage points. Runs whose reported model was chosen by its test-set score (the reference's
``main.py`` habit, docs/reference-implementation.md §3.2 and §9.6) are flagged.
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

from ctxsim.baselines import FINAL_KIND_PRIORITY, display_method, list_baselines, loss_for_method
from ctxsim.errors import NotFoundError
from ctxsim.names import DATASETS
from ctxsim.registry.states import JobStatus
from ctxsim.report.stats import seed_summary

MISSING = "—"
NUMERIC_COLUMNS = {"Res.", "Runs", "n", "Final", "95% CI", "Best", "Paper", "Δ (pp)", "Δ", "Paper best", "Δ best"}
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
    "final_mean", "final_std", "final_ci_low", "final_ci_high", "best_mean", "best_std", "test_selected",
    "paper", "paper_kind", "paper_method", "paper_source", "paper_origin", "delta",
    "paper_best", "paper_best_source", "delta_best", "comparable", "deviations",
)
NOT_COMPARABLE = "n/c"
NO_FINGERPRINT = "no data fingerprint recorded"  # a queued job has none yet
# Config keys (flattened, dotted) that cannot change what a run measures: a run's config is checked
# against the recipe of its cell with these left out. Everything else that differs is a deviation.
NON_RESULT_KEYS = (
    "seed",             # runs of a cell differ by seed by design (pooled, with a CI over seeds)
    "name", "tags",     # labels
    "root",             # where the data lies (the data itself is checked by its fingerprint)
    "device",           # auto/cuda/cpu: where, not what (a CPU run of the recipe is the same run)
    "num_workers",      # data-loading processes
    "eval_batch_size",  # evaluation embeds one image at a time in eval mode: the batch size is moot
    "deterministic",    # cuDNN algorithm choice: numerics at float rounding level, not the experiment
)
# the --set spelling of a config's free dicts (deviations are worded as a user would set them)
_SET_PREFIX = {"loss_kw.": "loss.", "sampler_kw.": "sampler.", "data_kw.": "data."}


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


def done_data(payloads: Sequence[Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """The data of a job's last ``done`` event that carries results (its ``metrics`` or selection).

    Payloads are what the registry sink stored; ``jobs.finish``'s own ``done`` row (exit code only)
    and rows written before events had payloads (None) say nothing: no such payload gives None.
    """
    for d in reversed(payloads):
        if isinstance(d, dict) and any(k in d for k in ("metrics", "selected", "selected_on", "best_epoch")):
            return d
    return None


def selected_on_test(done: Optional[dict[str, Any]], config_items: Optional[dict[str, str]] = None) -> bool:
    """True when the run reported its best checkpoint, picked by its score on the test set.

    From the ``done`` event (selected="best", selected_on="test"); without one, from the run's
    config (``select="best"``: ctxsim evaluates on the test split, as the reference does, §9.6,
    unless ``val_classes`` gave it a validation split to select on).
    """
    if done and done.get("selected"):
        return done.get("selected") == "best" and done.get("selected_on") == "test"
    items = config_items or {}
    has_val = items.get("val_classes") not in (None, "null", "0", "0.0")
    return items.get("select") == json.dumps("best") and not has_val


# --- reference numbers keyed by ctxsim loss name (the dashboard's reads) ------------------------


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
            r["resolution"] is None, kinds.index(r["kind"]), r["origin"] != "imported", -(r["id"] or 0)
        ),
    )


def gather_runs(
    reg,
    ids: Optional[Sequence[int]] = None,
    dataset: Optional[str] = None,
    loss: Optional[str] = None,
    resolution: Optional[int] = None,
    statuses: Optional[Sequence[str]] = (JobStatus.DONE,),
) -> list[dict[str, Any]]:
    """Jobs (by id, else by filter and status) with their summaries, config and done-event data.

    Raises NotFoundError naming ids that do not exist.
    """
    from ctxsim.registry.models import EventKind
    from ctxsim.registry.queries import job_configs, job_event_payloads, runs_table

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
    dones = job_event_payloads(reg, job_ids, EventKind.DONE)
    starts = job_event_payloads(reg, job_ids, EventKind.START)
    for j in jobs:
        j["config_items"] = _config_items(configs.get(j["id"]))
        done = done_data(dones.get(j["id"], []))
        j["done"] = done
        j["selected_on_test"] = selected_on_test(done, j["config_items"])
        fp = _fingerprint(starts.get(j["id"], []), j.get("run_dir"))
        j["deviations"] = run_deviations(configs.get(j["id"]), j["dataset"], j["loss"], j["resolution"], fp)
        digest = ((fp or {}).get("source") or {}).get("digest")
        if digest:  # data built locally (icons): runs on other theme versions or splits are another variant
            j["config_items"]["data"] = json.dumps(digest[:8])
    return sorted(jobs, key=lambda j: j["id"])


# --- comparability with the reference number -------------------------------------------------


def _fmt_config_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_config_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _set_name(key: str) -> str:
    for prefix, short in _SET_PREFIX.items():
        if key.startswith(prefix):
            return short + key[len(prefix):]
    return key


def _full_config(config: Any) -> dict[str, Any]:
    """A stored config (JSON text or dict) with the defaults of fields it lacks (older configs)."""
    from ctxsim.errors import ConfigError
    from ctxsim.train.config import RunConfig

    d = json.loads(config) if isinstance(config, str) else dict(config or {})
    try:
        return RunConfig.from_dict(d).to_dict()
    except (ConfigError, TypeError, ValueError):
        return d


def config_deviations(config: Any, dataset: str, loss: str, resolution: Optional[int]) -> list[str]:
    """How a run's config differs from the recipe of its cell (dataset, loss, resolution), worded
    ``key run≠recipe`` (``epochs 1≠80``, ``model.arch tiny≠resnet50``), recipe key order first;
    the keys of ``NON_RESULT_KEYS`` are left out. Empty: the run is the recipe (any seed)."""
    from ctxsim.errors import ConfigError
    from ctxsim.train.recipes import recipe

    try:
        ref = _flatten(recipe(dataset, loss, resolution or 256).to_dict())
    except ConfigError as e:
        return [f"no recipe for {dataset}/{loss}/{resolution}: {e}"]
    try:
        mine = _flatten(_full_config(config))
    except (TypeError, ValueError):
        return ["config not readable"]
    out = []
    for k in list(ref) + [k for k in mine if k not in ref]:
        if k in NON_RESULT_KEYS:
            continue
        a, b = mine.get(k, "unset"), ref.get(k, "unset")
        if a != b:
            out.append(f"{_set_name(k)} {_fmt_config_value(a)}≠{_fmt_config_value(b)}")
    return out


def run_deviations(config: Any, dataset: str, loss: str, resolution: Optional[int],
                   fingerprint: Optional[dict[str, Any]]) -> list[str]:
    """Everything that keeps a run's number from being comparable with the reference number of its
    cell: config keys that differ from the recipe, a profile other than ``reference``, and a data
    fingerprint that is missing or does not match the reference split (image and class counts).
    Empty: comparable."""
    from ctxsim.data.fingerprint import fingerprint_deviations

    out = config_deviations(config, dataset, loss, resolution)
    profile = _full_config(config).get("profile")
    if profile != "reference" and not any(d.startswith("profile ") for d in out):
        out.append(f"profile {_fmt_config_value(profile)}≠reference")
    if not fingerprint:
        out.append(NO_FINGERPRINT)
    else:
        out += [f"data: {d}" for d in fingerprint_deviations(fingerprint)]
    return out


def _fingerprint(payloads: Sequence[Optional[dict[str, Any]]], run_dir: Optional[str]) -> Optional[dict[str, Any]]:
    """A job's data fingerprint: from its last ``start`` event that carries one, else its run folder."""
    for d in reversed(payloads):
        if isinstance(d, dict) and isinstance(d.get("fingerprint"), dict):
            return d["fingerprint"]
    if run_dir:
        from ctxsim.data.fingerprint import FINGERPRINT_NAME

        try:
            fp = json.loads((Path(run_dir) / FINGERPRINT_NAME).read_text())
        except (OSError, ValueError):
            return None
        return fp if isinstance(fp, dict) else None
    return None


def comparability(reg, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """job id -> ``{"comparable": bool, "deviations": [...]}`` (see ``run_deviations``); the
    dashboard's compare view greys the rows that are not comparable."""
    from ctxsim.registry.models import EventKind
    from ctxsim.registry.queries import job_configs, job_event_payloads, runs_table

    ids = list(job_ids)
    if not ids:
        return {}
    jobs = runs_table(reg, ids=ids, summary_keys=())
    configs = job_configs(reg, ids)
    starts = job_event_payloads(reg, ids, EventKind.START)
    out = {}
    for j in jobs:
        devs = run_deviations(configs.get(j["id"]), j["dataset"], j["loss"], j["resolution"],
                              _fingerprint(starts.get(j["id"], []), j.get("run_dir")))
        out[j["id"]] = {"comparable": not devs, "deviations": devs}
    return out


def _union(lists: Iterable[list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for devs in lists:
        seen.update(dict.fromkeys(devs))
    return list(seen)


def final_and_best(job: dict[str, Any], metric: str) -> tuple[Optional[float], Optional[float]]:
    """A gathered job's (final, best) value of ``metric`` as stored (fractions): final is what its
    ``done`` event reported, else its last evaluation; best the maximum over evaluations (and final)."""
    s = job["summaries"].get(metric)
    done_m = ((job["done"] or {}).get("metrics") or {}).get(metric)
    final = done_m if done_m is not None else (s["last"] if s else None)
    if final is None:
        return None, None
    return final, max(s["best"] if s else final, final)


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
    statuses: Optional[Sequence[str]] = (JobStatus.DONE,),
) -> list[dict[str, Any]]:
    """Comparison rows (all values in percent): runs' final and best (mean, sample std over seeds),
    the 95% Student-t interval of the final mean over seeds (``final_ci_low``/``final_ci_high``,
    half width ``final_ci``; None for one seed), the reference number with kind/source/origin,
    delta = final mean - paper (pp), and ``comparable`` / ``deviations``: whether every run of the
    row is the recipe of its cell on the reference split under the reference profile
    (``run_deviations``). ``delta`` is the plain difference for every row; the table and markdown
    show it only for comparable rows.

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
                final, best = final_and_best(j, metric)
                if final is None:
                    continue
                finals.append(to_percent(final))
                bests.append(to_percent(best))
                run_ids.append(j["id"])
                seeds.append(j["seed"])
                n_test += int(j["selected_on_test"])
            if not run_ids:
                continue
            fm, fs = _mean_std(finals)
            bm, bs = _mean_std(bests)
            ci = seed_summary(finals)
            devs = _union(j["deviations"] for j in members if j["id"] in run_ids)
            ref = _pick_reference(refs, ls, res, metric, FINAL_KIND_PRIORITY)
            ref_best = _pick_reference(refs, ls, res, metric, ("reference_log_best",))
            rows.append({
                "dataset": ds, "loss": ls, "method": display_method(ls), "resolution": res,
                "variant": variant, "metric": metric, "n": len(run_ids), "run_ids": run_ids,
                "seeds": seeds, "final_mean": fm, "final_std": fs,
                "final_ci_low": ci.low, "final_ci_high": ci.high, "final_ci": ci.half_width,
                "best_mean": bm, "best_std": bs,
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
                "comparable": not devs, "deviations": devs,
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


def fmt_ci(low: Optional[float], high: Optional[float]) -> str:
    return MISSING if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def display_table(rows: list[dict[str, Any]], compact: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells, footnotes) shared by the terminal table (``compact``) and markdown.

    Sources become numbered footnotes so that cells stay short; so do the deviations of rows that
    are not comparable with the reference (their Δ reads ``n/c (a)``).
    """
    with_variant = any(r["variant"] for r in rows)
    with_best_ref = any(r["paper_best"] is not None for r in rows)
    sources: list[str] = []
    deviation_notes: list[str] = []

    def delta(r: dict[str, Any], v: Optional[float]) -> str:
        if v is None or r.get("comparable", True):
            return fmt_delta(v)
        text = ", ".join(r.get("deviations") or ["unknown"])
        if text not in deviation_notes:
            deviation_notes.append(text)
        return f"{NOT_COMPARABLE} ({_letter(deviation_notes.index(text))})"

    def ref(src: Optional[str]) -> str:
        if not src:
            return MISSING
        if src not in sources:
            sources.append(src)
        return f"[{sources.index(src) + 1}]"

    if compact:
        header = ["Run group"] + (["Variant"] if with_variant else []) + [
            "Metric", "n", "Final", "95% CI", "Best", "Paper", "Δ", "Provenance"]
        header += ["Paper best", "Δ best"] if with_best_ref else []
    else:
        header = ["Dataset", "Loss", "Res."] + (["Variant"] if with_variant else []) + [
            "Metric", "Runs", "Final", "95% CI", "Best", "Paper", "Δ (pp)", "Kind", "Src"]
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
            fmt_ci(r.get("final_ci_low"), r.get("final_ci_high")),
            fmt_mean_std(r["best_mean"], r["best_std"]), fmt_paper(r["paper"]), delta(r, r["delta"]),
        ]
        if compact:
            line.append(f"{r['paper_kind']} {ref(r['paper_source'])}" if r["paper_kind"] else MISSING)
            if with_best_ref:
                best = fmt_paper(r["paper_best"])
                line += [best if r["paper_best"] is None else f"{best} {ref(r['paper_best_source'])}",
                         delta(r, r["delta_best"])]
        else:
            line += [r["paper_kind"] or MISSING, ref(r["paper_source"])]
            if with_best_ref:
                line += [fmt_paper(r["paper_best"]), delta(r, r["delta_best"]), ref(r["paper_best_source"])]
        cells.append(line)
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    notes.append(
        "Values in percent; ± = sample std over seeds; 95% CI = Student-t interval of the mean over "
        "seeds (two or more); Final = what the run reported (else its last "
        "evaluation); Best = maximum over evaluations during training; Δ = Final - Paper in "
        f"percentage points; {MISSING} = no reference number."
    )
    if deviation_notes:
        notes.append(f"{NOT_COMPARABLE} = not comparable with the reference number (Δ not shown): the runs are "
                     "not the recipe of their cell on the reference split under the reference profile.")
        notes += [f"({_letter(i)}) {text}" for i, text in enumerate(deviation_notes)]
    if with_best_ref:
        notes.append("Paper best = the reference log's best test R@1 during training; Δ best = Best - Paper best.")
    if any(r["test_selected"] for r in rows):
        notes.append(f"{TEST_SELECTED_MARK} the reported model was selected on the test set (docs/reference-implementation.md §9.6).")
    return header, cells, notes


def _letter(i: int) -> str:
    """Footnote letters a..z, then aa, ab, ..."""
    return chr(97 + i) if i < 26 else _letter(i // 26 - 1) + chr(97 + i % 26)


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
        w.writerow(["; ".join(r.get(f) or []) if f == "deviations" else _csv_value(r.get(f)) for f in CSV_FIELDS])
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str, ensure_ascii=False) + "\n"


# --- paired significance test of two runs or run groups ----------------------------------------

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
