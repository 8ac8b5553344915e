"""Whether a run is comparable with the reference number of its cell: its config is the cell's
recipe (``NON_RESULT_KEYS`` aside), its profile is ``reference`` and its data fingerprint matches
the reference split. Every difference is one short string (``"epochs 1≠80"``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional, Sequence

NOT_COMPARABLE = "n/c"
NO_FINGERPRINT = "no data fingerprint recorded"  # a queued job has none yet
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
    "eval_memory_gb",   # the metrics' block size: exact whatever the budget
    "eval_precision",   # the metrics' score dtype: float rounding of near-tied scores, not the experiment
)
# the --set spelling of a config's free dicts (deviations are worded as a user would set them)
_SET_PREFIX = {"loss_kw.": "loss.", "sampler_kw.": "sampler.", "data_kw.": "data."}


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
    text = config if isinstance(config, str) else json.dumps(dict(config or {}), default=str)
    return json.loads(_full_config_text(text))  # JSON values both sides (lists, never tuples)


@functools.lru_cache(maxsize=4096)
def _full_config_text(config: str) -> str:
    # runs of one sweep share their config text up to the seed: completed once per text
    return json.dumps(_complete(json.loads(config)), default=str)


def _complete(d: dict[str, Any]) -> dict[str, Any]:
    from ctxsim.errors import ConfigError
    from ctxsim.train.config import RunConfig

    try:
        return RunConfig.from_dict(d).to_dict()
    except (ConfigError, TypeError, ValueError):
        return d


@functools.lru_cache(maxsize=256)
def _recipe_items(dataset: str, loss: str, resolution: int, family: str = "paper") -> str:
    """The recipe of a cell, flattened, as JSON (cached: compare asks once per run)."""
    from ctxsim.train.recipes import recipe

    return json.dumps(_flatten(recipe(dataset, loss, resolution, family=family).to_dict()))


def _family(config: str) -> str:
    try:
        d = json.loads(config)
    except (TypeError, ValueError):
        return "paper"
    fam = d.get("recipe") if isinstance(d, dict) else None
    return fam if isinstance(fam, str) else "paper"


def trunk_reason(config: Any) -> Optional[str]:
    """Why a run cannot be set beside the paper's tables whatever else it matches: they are
    ResNet-50 numbers, and this run trains another trunk (the ViT recipe, or a timm model set by
    hand). None for a ResNet-50 run (or one on a small dataset with ctxsim's own recipe)."""
    text = config if isinstance(config, str) else json.dumps(dict(config or {}), default=str)
    if _family(text) == "vit-s16-224":
        return "recipe vit-s16-224: a DINO ViT-S/16 trunk; the paper's tables are ResNet-50"
    try:
        arch = (json.loads(text).get("model") or {}).get("arch", "")
    except (AttributeError, TypeError, ValueError):
        return None
    if isinstance(arch, str) and arch.startswith("timm:"):
        return f"trunk {arch}: the paper's tables are ResNet-50"
    return None


def config_deviations(config: Any, dataset: str, loss: str, resolution: Optional[int]) -> list[str]:
    """How a run's config differs from the recipe of its cell (dataset, loss, resolution), worded
    ``key run≠recipe`` (``epochs 1≠80``, ``model.arch tiny≠resnet50``), recipe key order first;
    the keys of ``NON_RESULT_KEYS`` are left out. Empty: the run is the recipe (any seed)."""
    text = config if isinstance(config, str) else json.dumps(dict(config or {}), default=str, sort_keys=True)
    return list(_config_deviations(text, dataset, loss, resolution))


@functools.lru_cache(maxsize=4096)
def _config_deviations(config: str, dataset: str, loss: str, resolution: Optional[int]) -> tuple[str, ...]:
    return tuple(_deviations(config, dataset, loss, resolution))


def _deviations(config: str, dataset: str, loss: str, resolution: Optional[int]) -> list[str]:
    from ctxsim.errors import ConfigError

    family = _family(config)
    try:
        ref = json.loads(_recipe_items(dataset, loss, resolution or (224 if family != "paper" else 256), family))
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

    text = config if isinstance(config, str) else json.dumps(dict(config or {}), default=str, sort_keys=True)
    out = list(_config_part(text, dataset, loss, resolution))
    if not fingerprint:
        out.append(NO_FINGERPRINT)
    else:
        out += [f"data: {d}" for d in fingerprint_deviations(fingerprint)]
    return out


@functools.lru_cache(maxsize=4096)
def _config_part(text: str, dataset: str, loss: str, resolution: Optional[int]) -> tuple[str, ...]:
    # what depends on the config alone: computed once per config text (compare asks once per run)
    trunk = trunk_reason(text)
    out = ([trunk] if trunk else []) + config_deviations(text, dataset, loss, resolution)
    profile = _full_config(text).get("profile")
    if trunk is None and profile != "reference" and not any(d.startswith("profile ") for d in out):
        out.append(f"profile {_fmt_config_value(profile)}≠reference")
    return tuple(out)


def run_fingerprint(payloads: Sequence[Optional[dict[str, Any]]], run_dir: Optional[str]) -> Optional[dict[str, Any]]:
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
                              run_fingerprint(starts.get(j["id"], []), j.get("run_dir")))
        out[j["id"]] = {"comparable": not devs, "deviations": devs}
    return out
