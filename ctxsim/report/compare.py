"""Runs versus reference numbers: one row (``CompareRow``) per dataset / loss / resolution (/ config
variant) / metric, gathered from the registry. Renderings are in ``ctxsim.report.render``, whether a
run is comparable in ``ctxsim.report.comparability``, the paired test in ``ctxsim.report.paired``.

Runs store metrics as fractions (0..1); reference numbers are percentages. Everything this module
returns is in percent (``to_percent`` is the one conversion). Delta = mean final - paper, in
percentage points. Runs whose reported model was chosen by its test-set score (the reference's
``main.py`` habit, docs/reference-implementation.md §3.2 and §9.6) are flagged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from ctxsim.baselines import FINAL_KIND_PRIORITY, display_method, list_baselines
from ctxsim.baselines.paper import paper_curve, paper_number, paper_numbers  # noqa: F401  (importable from here, as before)
from ctxsim.baselines.untrained import find_untrained, is_untrained_job, untrained_key
from ctxsim.errors import NotFoundError
from ctxsim.names import DATASETS
from ctxsim.registry.states import JobStatus
from ctxsim.report.comparability import (  # noqa: F401  (as above)
    NO_FINGERPRINT,
    NON_RESULT_KEYS,
    NOT_COMPARABLE,
    _flatten,
    comparability,
    config_deviations,
    run_deviations,
    run_fingerprint,
)
from ctxsim.report.stats import seed_summary

_EVAL_KEY = re.compile(r"^(R@\d+|MAP@R|RP|mAP)$")
# config keys that do not change what a run measures (grouping ignores them; seeds are pooled)
_IGNORED_CONFIG_KEYS = {
    "seed", "name", "run_dir", "out", "out_dir", "output_dir", "device", "root", "data_root",
    "num_workers", "workers", "tags", "tag", "gpus", "detach", "notes", "progress", "log_every",
    "eval_batch_size",
}


def to_percent(fraction: Optional[float]) -> Optional[float]:
    """A stored metric (fraction 0..1) as a percentage."""
    return None if fraction is None else 100.0 * float(fraction)


def metric_sort_key(key: str) -> tuple:
    m = re.match(r"^R@(\d+)$", key)
    if m:
        return (0, int(m.group(1)), key)
    return (1, {"MAP@R": 0, "RP": 1, "mAP": 2}.get(key, 9), key)


def _config_items(config_json: Optional[str]) -> dict[str, str]:
    return dict(_config_items_of(config_json or "{}"))


@functools.lru_cache(maxsize=4096)
def _config_items_of(config_json: str) -> tuple[tuple[str, str], ...]:
    # runs of one sweep share their config up to the seed: flattened once per distinct text
    try:
        cfg = json.loads(config_json)
    except (TypeError, ValueError):
        return ()
    return tuple((k, json.dumps(v, sort_keys=True, default=str)) for k, v in _flatten(cfg).items()
                 if k.rsplit(".", 1)[-1] not in _IGNORED_CONFIG_KEYS)


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
    if not ids:  # untrained-baseline jobs are not runs: they appear as Δ untrained
        jobs = [j for j in jobs if not is_untrained_job(configs.get(j["id"]))]
        job_ids = [j["id"] for j in jobs]
    dones = job_event_payloads(reg, job_ids, EventKind.DONE)
    starts = job_event_payloads(reg, job_ids, EventKind.START)
    for j in jobs:
        j["config_items"] = _config_items(configs.get(j["id"]))
        done = done_data(dones.get(j["id"], []))
        j["done"] = done
        j["selected_on_test"] = selected_on_test(done, j["config_items"])
        fp = run_fingerprint(starts.get(j["id"], []), j.get("run_dir"))
        j["deviations"] = run_deviations(configs.get(j["id"]), j["dataset"], j["loss"], j["resolution"], fp)
        j["config"] = configs.get(j["id"])
        j["untrained_key"] = untrained_key(j["config"], fp)
        digest = ((fp or {}).get("source") or {}).get("digest")
        if digest:  # data built locally (icons): runs on other theme versions or splits are another variant
            j["config_items"]["data"] = json.dumps(digest[:8])
    return sorted(jobs, key=lambda j: j["id"])


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


@dataclass(frozen=True)
class CompareRow:
    """One comparison row, values in percent. Reads like the dict it replaced (``row["n"]``,
    ``row.get("ci")``); ``to_dict()`` is what ``--json`` prints."""

    dataset: str
    loss: str
    method: str
    resolution: Optional[int]
    variant: str
    metric: str
    n: int
    run_ids: list[int]
    seeds: list[Optional[int]]
    final_mean: Optional[float]
    final_std: Optional[float]
    final_ci_low: Optional[float]
    final_ci_high: Optional[float]
    final_ci: Optional[float]  # half width of the 95% interval over seeds
    best_mean: Optional[float]
    best_std: Optional[float]
    finals: list[float]
    bests: list[float]
    test_selected: int
    paper: Optional[float]
    paper_kind: Optional[str]
    paper_method: Optional[str]
    paper_source: Optional[str]
    paper_origin: Optional[str]
    delta: Optional[float]
    paper_best: Optional[float]
    paper_best_source: Optional[str]
    delta_best: Optional[float]
    comparable: bool
    deviations: list[str]
    untrained: Optional[float] = None  # the same trunk before training, same test split (ctxsim.baselines.untrained)
    delta_untrained: Optional[float] = None  # final mean - untrained (pp)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# the CSV columns: every field but the per-seed lists and the interval's half width
CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CompareRow)
                                    if f.name not in ("finals", "bests", "final_ci"))


def compare_rows(
    reg,
    ids: Optional[Sequence[int]] = None,
    dataset: Optional[str] = None,
    loss: Optional[str] = None,
    resolution: Optional[int] = None,
    metrics: Optional[Sequence[str]] = None,
    statuses: Optional[Sequence[str]] = (JobStatus.DONE,),
) -> list[CompareRow]:
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
    return rows_of(reg, jobs, metrics)


def rows_of(reg, jobs: list[dict[str, Any]], metrics: Optional[Sequence[str]] = None) -> list[CompareRow]:
    """``compare_rows`` of runs already gathered (``gather_runs``)."""
    variants = _variants(jobs)
    untrained = find_untrained(reg, [j["untrained_key"] for j in jobs if j.get("untrained_key")])
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
            # one baseline per row: its runs share the evaluation setup (they differ by seed only)
            keys = {j.get("untrained_key") for j in members if j["id"] in run_ids}
            base = untrained.get(next(iter(keys))) if len(keys) == 1 and None not in keys else None
            unt = base.get(metric) if base else None
            ref = _pick_reference(refs, ls, res, metric, FINAL_KIND_PRIORITY)
            ref_best = _pick_reference(refs, ls, res, metric, ("reference_log_best",))
            rows.append(CompareRow(**{
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
                "untrained": unt, "delta_untrained": (fm - unt) if unt is not None else None,
            }))
    ds_order = {d: i for i, d in enumerate(DATASETS)}
    rows.sort(key=lambda r: (
        ds_order.get(r["dataset"], 99), r["dataset"], r["resolution"] or 0, r["loss"] != "hybrid",
        r["loss"], r["variant"], metric_sort_key(r["metric"]),
    ))
    return rows


