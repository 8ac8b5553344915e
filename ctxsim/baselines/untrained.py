"""The untrained-backbone baseline: what a run's trunk gives on the same test split before its first
step (pretrained weights if the recipe loads them, random init otherwise, with the recipe's seed 0).

With modern trunks much of a benchmark number is the pretraining; ``Δ untrained`` beside ``Δ paper``
says how much the training itself added. One baseline serves every run that shares its evaluation
setup: the key hashes the dataset, its evaluation splits (from the data fingerprint), the trunk and
its weights, the embedding head, the resolution and the evaluation settings; a run's seed, loss and
training settings are not in it. It is stored once, in the ``baselines`` table (kind ``untrained``,
origin ``computed``), one row per metric, in percent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Optional, Sequence

from ctxsim.names import SMALL_DATASETS

UNTRAINED_KIND = "untrained"
ORIGIN = "computed"
METHOD_PREFIX = "untrained:"
SEED = 0  # every recipe's seed: the baseline is one per setup, not one per run seed
# data held in memory: the baseline takes seconds, so compare computes it on first need
CHEAP_DATASETS = tuple(SMALL_DATASETS)


def _config_dict(config: Any) -> Optional[dict[str, Any]]:
    if isinstance(config, dict):
        return config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    try:
        d = json.loads(config)
    except (TypeError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def untrained_key(config: Any, fingerprint: Optional[dict[str, Any]]) -> Optional[str]:
    """The baseline a run (its config: RunConfig, dict or JSON, and its data fingerprint) is set
    beside; None without a fingerprint (a run that never started) or a readable config."""
    d = _config_dict(config)
    if d is None or not isinstance(fingerprint, dict):
        return None
    splits = fingerprint.get("splits") or {}
    m = d.get("model") or {}
    ident = {
        "dataset": d.get("dataset"), "resolution": d.get("resolution"),
        "eval_splits": {k: splits[k] for k in ("test", "query", "gallery") if k in splits},
        "source": ((fingerprint.get("source") or {}).get("digest")),
        "model": {k: m.get(k) for k in ("arch", "backbone_weights", "pooling", "layernorm", "embedding_size",
                                        "embedding_init")},
        "data_kw": d.get("data_kw") or {}, "jpeg_draft": d.get("jpeg_draft", True),
        "ks": d.get("ks"), "full_map": d.get("full_map", False), "seed": SEED,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def untrained_config(cfg):
    """The config the baseline is computed with: the run's, at the recipe's seed, without a
    validation split (the test split is the same either way)."""
    return cfg.with_overrides(seed=SEED, val_classes=None, select="last")


def find_untrained(reg, keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """key -> {metric: value in percent} for the stored baselines among ``keys``."""
    from sqlalchemy import select

    from ctxsim.registry.models import Baseline

    wanted = {METHOD_PREFIX + k: k for k in keys if k}
    if not wanted:
        return {}
    out: dict[str, dict[str, float]] = {}
    with reg.Session() as s:
        rows = s.scalars(select(Baseline).where(Baseline.kind == UNTRAINED_KIND,
                                                Baseline.method.in_(list(wanted)))).all()
        for r in rows:
            out.setdefault(wanted[r.method], {})[r.metric] = float(r.value)
    return out


def record_untrained(reg, key: str, cfg, metrics: dict[str, float]) -> bool:
    """Stores a baseline (metrics as fractions) once; False if that key was already stored."""
    from sqlalchemy import select

    from ctxsim.registry.models import Baseline

    source = json.dumps({"arch": cfg.model.arch, "backbone_weights": cfg.model.backbone_weights,
                         "embedding_size": cfg.model.embedding_size, "seed": SEED, "key": key}, sort_keys=True)

    def add(s) -> bool:
        if s.scalars(select(Baseline.id).where(Baseline.kind == UNTRAINED_KIND,
                                               Baseline.method == METHOD_PREFIX + key).limit(1)).first():
            return False  # another process stored it meanwhile
        for metric, value in metrics.items():
            s.add(Baseline(resolution=cfg.resolution, dataset=cfg.dataset, method=METHOD_PREFIX + key,
                           metric=metric, value=100.0 * float(value), kind=UNTRAINED_KIND, source=source,
                           origin=ORIGIN))
        return True

    return reg.run(add, what="recording an untrained baseline")


def evaluate_untrained(cfg, device: str = "auto", reg=None) -> tuple[Optional[dict[str, float]], str]:
    """(metrics as fractions, key) of the config's trunk as built before the first step, on its
    test split. Builds in the order a run does (seed, data, model), so the random head is the one
    a run of this config at seed 0 starts from. With ``reg`` and a stored baseline for the key, the
    model is not evaluated: (None, key)."""
    from ctxsim.data.fingerprint import data_fingerprint
    from ctxsim.train.build import build_run_data, build_run_model, resolve_device, seed_everything
    from ctxsim.train.evaluation import evaluate_model, evaluation_workers

    cfg = untrained_config(cfg)
    seed_everything(cfg.seed)
    data = build_run_data(cfg)
    key = untrained_key(cfg, data_fingerprint(data, cfg.dataset))
    if reg is not None and find_untrained(reg, [key]):
        return None, key
    dev = resolve_device(device)
    model = build_run_model(cfg, data.in_channels).to(dev).eval()
    return evaluate_model(model, data, cfg, dev, num_workers=evaluation_workers(cfg)), key


def untrained_baseline(reg, cfg, device: str = "auto") -> tuple[dict[str, float], str, bool]:
    """(metrics in percent, key, computed now?): the stored baseline of ``cfg``'s setup, computed
    and recorded first if there is none."""
    metrics, key = evaluate_untrained(cfg, device, reg=reg)
    if metrics is None:
        return find_untrained(reg, [key])[key], key, False
    record_untrained(reg, key, cfg, metrics)
    return {k: 100.0 * float(v) for k, v in metrics.items()}, key, True


def how_to_compute(dataset: str, config: Any) -> str:
    """The command that computes a run's baseline (for a line where it is not computed)."""
    d = _config_dict(config) or {}
    args = ["ctxsim", "eval", "--untrained", "-d", dataset]
    if d.get("recipe", "paper") != "paper":
        args += ["--recipe", str(d["recipe"])]
    elif d.get("resolution"):
        args += ["-r", str(d["resolution"])]
    return " ".join(args)


def ensure_untrained(reg, jobs: Sequence[dict[str, Any]], device: str = "auto",
                     on_progress: Optional[Callable[[int, int, str], None]] = None) -> list[str]:
    """Computes the missing baselines of gathered runs (``compare.gather_runs``) whose data is cheap
    to evaluate (CHEAP_DATASETS); returns the commands for the others, one per missing setup."""
    from ctxsim.train.config import RunConfig

    missing: dict[str, dict[str, Any]] = {}
    for j in jobs:
        k = j.get("untrained_key")
        if k and k not in missing:
            missing[k] = j
    have = find_untrained(reg, list(missing))
    todo = [(k, j) for k, j in missing.items() if k not in have]
    hints: list[str] = []
    cheap = [(k, j) for k, j in todo if j["dataset"] in CHEAP_DATASETS]
    for i, (_k, j) in enumerate(cheap):
        if on_progress:
            on_progress(i, len(cheap), j["dataset"])
        untrained_baseline(reg, RunConfig.from_dict(_config_dict(j["config"])), device)
    if on_progress and cheap:
        on_progress(len(cheap), len(cheap), "")
    for _k, j in todo:
        if j["dataset"] not in CHEAP_DATASETS:
            hints.append(how_to_compute(j["dataset"], j["config"]))
    return list(dict.fromkeys(hints))


def untrained_job_config(cfg) -> dict[str, Any]:
    """The config of an ``untrained`` job (``ctxsim.runner.kinds``; run by ``run_untrained_job``,
    recorded by ``record_untrained_job``): the job columns and the RunConfig whose trunk it evaluates
    (``untrained_config`` of ``cfg``) under ``"config"``. ``reproduce`` queues one per dataset of a table."""
    u = untrained_config(cfg)
    return {"kind": "untrained", "dataset": u.dataset, "loss": u.loss, "resolution": u.resolution,
            "seed": SEED, "epochs": 0, "config": u.to_dict()}


def run_untrained_job(cfg: dict[str, Any], sink: Any, run_dir: Any, should_stop: Any = None) -> dict[str, Any]:
    """Entry of the ``untrained`` job kind: evaluates the trunk as ``evaluate_untrained`` does and
    emits start / eval / done (epoch 0); returns ``{"key", "metrics"}`` for ``record_untrained_job``."""
    from ctxsim.data.fingerprint import data_fingerprint
    from ctxsim.names import RUNTIME_DEVICE
    from ctxsim.train.build import build_run_data, build_run_model, resolve_device, seed_everything
    from ctxsim.train.config import RunConfig
    from ctxsim.train.evaluation import evaluate_model, evaluation_workers
    from ctxsim.train.events import Event

    rc = untrained_config(RunConfig.from_dict(cfg["config"]))
    seed_everything(rc.seed)
    data = build_run_data(rc)
    fp = data_fingerprint(data, rc.dataset)
    key = untrained_key(rc, fp)
    sink.emit(Event("start", {"config": rc.to_dict(), "run_dir": str(run_dir), "epochs": 0, "steps_per_epoch": 0,
                              "start_epoch": 0, "fingerprint": fp}))
    dev = resolve_device(cfg.get(RUNTIME_DEVICE, "auto"))
    model = build_run_model(rc, data.in_channels).to(dev).eval()
    metrics = {k: float(v) for k, v in evaluate_model(model, data, rc, dev, num_workers=evaluation_workers(rc)).items()}
    sink.emit(Event("eval", {"epoch": 0, "metrics": metrics, "split": "test"}))
    sink.emit(Event("done", {"metrics": metrics, "selected": "last", "best_epoch": 0, "selected_on": None,
                             "untrained_key": key}))
    return {"key": key, "metrics": metrics}


def record_untrained_job(reg, cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """``on_done`` of the ``untrained`` job kind: records the baseline the job computed."""
    from ctxsim.train.config import RunConfig

    record_untrained(reg, result["key"], untrained_config(RunConfig.from_dict(cfg["config"])), result["metrics"])


def is_untrained_job(config: Any) -> bool:
    """Whether a stored job config is an ``untrained`` job (not a run: compare leaves it out)."""
    if isinstance(config, str) and '"untrained"' not in config:
        return False  # most configs: no parse
    d = _config_dict(config)
    return bool(d) and d.get("kind") == "untrained"
