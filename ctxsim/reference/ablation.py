"""The ablation study of the contextual similarity (reference-implementation §8) as a grid and a table.

The reference's ``ablations.py`` never applied its ``--ablation`` (its loss imported the default
similarity, reference-implementation §8 bug), so no reference numbers exist for these variants; ctxsim's
``build_loss("hybrid", ablation=N)`` applies them for real. ``ablation_configs`` builds the grid
(one hybrid RunConfig per variant and seed), ``ablation_table`` lays finished runs out like the
paper's ablation table: variant, what it removes, R@1, MAP@R and the delta to the default.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from ctxsim.errors import ConfigError


@dataclass(frozen=True)
class AblationVariant:
    id: int
    name: str  # the loss's ablation name (ctxsim.losses.contextual.ABLATIONS)
    title: str
    removes: str


# reference-implementation §8 (ablations.py header and get_jaccard_similarity), in the script's numbering
ABLATION_VARIANTS: tuple[AblationVariant, ...] = (
    AblationVariant(0, "default", "Default (paper)", "nothing: the full contextual similarity (§1.2)"),
    AblationVariant(1, "mask_only", "N_k mask only (L1)",
                    "intersections and query expansion: J = hard k-NN mask, eps fixed to 1e-5"),
    AblationVariant(2, "mask_only_sigmoid", "N_k mask, sigmoid step (L1,σ)",
                    "as 1, and the hard step (sigmoid, temperature 0.01)"),
    AblationVariant(3, "no_qe", "No query expansion (L2)", "query expansion and symmetrisation: J = W̃"),
    AblationVariant(4, "no_qe_no_neg", "No QE, no negative intersection (L2,M+)",
                    "as 3, and the non-neighbour intersection: J = inter ⊙ N"),
    AblationVariant(5, "min_and", "min as logical AND", "products as AND (min instead, also in the matmuls)"),
    AblationVariant(6, "sigmoid", "Sigmoid everywhere (σ)", "the hard steps (sigmoid, temperature 0.01)"),
    AblationVariant(7, "no_neg", "No negative intersection (M+)", "the non-neighbour intersection: W̃ = inter ⊙ N"),
    AblationVariant(8, "no_intersection", "Skip intersection", "the neighbourhood intersection: W̃ = N"),
    AblationVariant(9, "detach_r_norm", "Detach |R_k/2|", "the gradient through the query-expansion normaliser"),
    AblationVariant(10, "detach_nothing", "Detach nothing", "the detaching of the |N| and |not N| normalisers"),
)
VARIANTS_BY_ID = {v.id: v for v in ABLATION_VARIANTS}


def parse_variants(spec: str | Iterable[int] | None) -> list[int]:
    """"all" / None -> 0..10; "0,3,7" or an iterable -> those ids (0 is always included: it is the
    reference the deltas are taken against)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return [v.id for v in ABLATION_VARIANTS]
    if isinstance(spec, str):
        try:
            ids = [int(t) for t in spec.replace(" ", "").split(",") if t]
        except ValueError:
            raise ConfigError(f"--ablation expects 'all' or ids 0-10 like 0,3,7; got {spec!r}") from None
    else:
        ids = [int(t) for t in spec]
    bad = [i for i in ids if i not in VARIANTS_BY_ID]
    if bad or not ids:
        raise ConfigError(f"ablation ids must be 0-10; got {spec!r}")
    return sorted(set(ids) | {0})


def ablation_configs(dataset: str, resolution: int = 256, base: Any = None, seeds: Sequence[int] | int = (0,),
                     variants: str | Iterable[int] | None = "all") -> list[Any]:
    """One hybrid RunConfig per (variant, seed) of reference-implementation §8: ``base`` (default: the dataset's
    hybrid recipe) with ``loss_kw["ablation"] = id``, named ``ablation-<id>-<name>`` and tagged
    ``ablation``, ``ablation=<id>``. ``seeds`` is a list or a count (0..n-1)."""
    from ctxsim.train import recipe

    if base is None:
        base = recipe(dataset, "hybrid", resolution)
    if base.loss != "hybrid":
        raise ConfigError(f"the ablation grid varies the hybrid loss; the base config uses {base.loss!r}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("the ablation grid needs at least one seed")
    out = []
    for vid in parse_variants(variants):
        v = VARIANTS_BY_ID[vid]
        for seed in seed_list:
            tags = sorted(set(base.tags) | {"ablation", f"ablation={vid}"})
            out.append(base.with_overrides(loss_kw={**base.loss_kw, "ablation": vid}, seed=seed,
                                           name=f"ablation-{vid}-{v.name}", tags=tags))
    return out


def build_ablation_grid(datasets: str, losses: Optional[str], resolutions: str, seeds: Optional[str],
                        sets: list[str], epochs: Optional[int], root: Optional[str], variants: str,
                        profile: Optional[str] = None) -> list[tuple[Any, list[str]]]:
    """``ctxsim sweep --ablation``: every (dataset, resolution, --set) base hybrid config of the sweep
    grid (ctxsim.train.sweep) x variants x seeds, as [(RunConfig, its assignments)]."""
    from ctxsim.train.sweep import build_grid, parse_seeds, split_values

    if losses and split_values(losses) != ["hybrid"]:
        raise ConfigError(f"--ablation varies the hybrid loss; drop --loss or use --loss hybrid (got {losses!r})")
    out = []
    for base, assign in build_grid(datasets, "hybrid", resolutions, None, sets, epochs, root, profile):
        seed_list = [base.seed if s is None else s for s in parse_seeds(seeds)]
        for cfg in ablation_configs(base.dataset, base.resolution, base=base, seeds=seed_list, variants=variants):
            out.append((cfg, assign + [f"loss.ablation={cfg.loss_kw['ablation']}"]))
    return out


def _ablation_of(config_items: dict[str, str]) -> Optional[int]:
    """The ablation id of a hybrid run from its flattened config (None: not a hybrid run)."""
    raw = config_items.get("loss_kw.ablation")
    if raw is None:
        return 0
    v = json.loads(raw)
    if isinstance(v, str):
        from ctxsim.losses.contextual import resolve_ablation

        return resolve_ablation(v)
    return int(v)


def ablation_table(runs: Sequence[dict[str, Any]], metrics: Sequence[str] = ("R@1", "MAP@R")) -> list[dict[str, Any]]:
    """Rows of the paper-style ablation table from finished hybrid runs, one per variant present.

    Each run is a dict with ``ablation`` (id), ``seed`` and ``metrics`` ({name: fraction}); or a
    registry job as returned by ``ctxsim.report.compare.gather_runs`` (``config_items``, ``done``,
    ``summaries``), whose final value is taken as compare does (the done event, else the last eval).
    Values are percentages (mean over seeds, sample std); ``delta[m]`` = mean - default's mean (pp).
    """
    by_variant: dict[int, dict[str, list[float]]] = {}
    ids: dict[int, list[int]] = {}
    seeds: dict[int, list[Any]] = {}
    for r in runs:
        if "config_items" in r:
            if r.get("loss") not in (None, "hybrid"):
                continue
            vid = _ablation_of(r["config_items"])
            done_m = ((r.get("done") or {}).get("metrics") or {})
            values = {}
            for m in metrics:
                s = (r.get("summaries") or {}).get(m)
                v = done_m.get(m, s["last"] if s else None)
                if v is not None:
                    values[m] = float(v)
        else:
            vid = int(r["ablation"])
            values = {m: float(r["metrics"][m]) for m in metrics if r.get("metrics", {}).get(m) is not None}
        if vid not in VARIANTS_BY_ID:
            raise ConfigError(f"unknown ablation id {vid} in a run")
        slot = by_variant.setdefault(vid, {m: [] for m in metrics})
        for m, v in values.items():
            slot[m].append(100.0 * v)
        if r.get("id") is not None:
            ids.setdefault(vid, []).append(int(r["id"]))
        seeds.setdefault(vid, []).append(r.get("seed"))

    def mean_std(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
        if not xs:
            return None, None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)

    means = {vid: {m: mean_std(vals[m]) for m in metrics} for vid, vals in by_variant.items()}
    default = means.get(0)
    rows = []
    for vid in sorted(by_variant):
        v = VARIANTS_BY_ID[vid]
        row: dict[str, Any] = {"id": vid, "name": v.name, "variant": v.title, "removes": v.removes,
                               "n": len(seeds[vid]), "run_ids": ids.get(vid, []), "seeds": seeds[vid],
                               "mean": {}, "std": {}, "delta": {}}
        for m in metrics:
            mu, sd = means[vid][m]
            row["mean"][m], row["std"][m] = mu, sd
            base = default[m][0] if default else None
            row["delta"][m] = None if mu is None or base is None else mu - base
        rows.append(row)
    return rows


def ablation_rows_from_registry(reg: Any, dataset: Optional[str] = None, resolution: Optional[int] = None,
                                ids: Optional[Sequence[int]] = None,
                                metrics: Sequence[str] = ("R@1", "MAP@R")) -> list[dict[str, Any]]:
    """``ablation_table`` of the registry's finished hybrid runs (by ids, else by dataset/resolution)."""
    from ctxsim.report.compare import gather_runs

    jobs = gather_runs(reg, ids=ids, dataset=dataset, loss=None if ids else "hybrid", resolution=resolution)
    return ablation_table([j for j in jobs if j.get("loss") == "hybrid"], metrics)


def _fmt(mu: Optional[float], sd: Optional[float]) -> str:
    if mu is None:
        return "—"
    return f"{mu:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def _fmt_delta(d: Optional[float]) -> str:
    return "—" if d is None else f"{d:+.2f}"


def ablation_display(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = ("R@1", "MAP@R")) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the table, values in percent, deltas in percentage points."""
    headers = ["#", "Variant", "Removes", "n"]
    for m in metrics:
        headers += [m, f"Δ {m}"]
    cells = []
    for r in rows:
        line = [str(r["id"]), r["variant"], r["removes"], str(r["n"])]
        for m in metrics:
            line += [_fmt(r["mean"][m], r["std"][m]), "" if r["id"] == 0 else _fmt_delta(r["delta"][m])]
        cells.append(line)
    return headers, cells


def ablation_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = ("R@1", "MAP@R")) -> str:
    headers, cells = ablation_display(rows, metrics)
    esc = [[c.replace("|", "\\|") for c in line] for line in cells]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in esc]
    return "\n".join(lines) + "\n"
