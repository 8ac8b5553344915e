"""RunConfig: everything that determines a training run, typed, validated, JSON-serialisable.

Pure data (no torch import) so that the CLI can build and validate configs quickly.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional

from ctxsim.errors import ConfigError
from ctxsim.names import ARCHS, EVAL_PRECISIONS, check_tracker_names

POOLINGS = ("gem", "max", "avg", "avgmax")
BOTTLENECKS = ("identity", "linear")
BN_MODES = ("none", "eval_stats", "freeze")
SAMPLERS = ("balanced224", "random256", "hierarchical", "m_per_class", "shuffle")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("step", "multistep", "none")
SELECTS = ("last", "best")
CONVENTIONS = ("224", "256")
DEVICES = ("auto", "cpu", "cuda")
DECODES = ("cpu", "gpu")  # data.decode: where training JPEGs are decoded (ctxsim.data.gpu_decode)
PROFILES = ("reference", "fixed")  # ctxsim.train.profiles: the reference code exactly, or corrected
RECIPE_FAMILIES = ("paper", "vit-s16-224")  # ctxsim.train.recipes: the paper's ResNet-50 recipes, or DINO ViT-S/16

# Keys left out of config_hash: they name or place a run but do not change what it computes.
_UNHASHED = ("name", "tags", "num_workers", "root", "track", "eval_memory_gb")
# Keys added after runs were recorded: left out of config_hash while at these values, so a config
# that does not use them hashes as it did before they existed.
_HASHED_UNLESS_DEFAULT = {"profile": "fixed", "jpeg_draft": True, "bottleneck_fp32": False, "rrc_ratio": None,
                          "full_map": False, "val_classes": None, "recipe": "paper",
                          "eval_precision": "float32"}
_MODEL_HASHED_UNLESS_DEFAULT = {"freeze_patch_embed": False}


@dataclass
class ModelSpec:
    """Arguments of ``ctxsim.models.build_model`` (in_channels comes from the dataset)."""

    arch: str = "resnet50"
    pooling: str = "gem"
    layernorm: bool = False
    embedding_size: int = 512
    bottleneck: str = "identity"
    bottleneck_size: int = 2048
    backbone_weights: Optional[str] = "imagenet"
    bn_mode: str = "freeze"
    embedding_init: str = "kaiming"  # 224: kaiming_normal fan_out (§3.1); 256: torch's default Linear init; ViT: orthogonal
    freeze_patch_embed: bool = False  # ViT trunks: the patch projection stays as pretrained (docs/recipes-vit.md)

    def loss_dim(self) -> int:
        """Dimension of the space the loss sees (bottleneck output, reference-implementation §3.1)."""
        return self.bottleneck_size if self.bottleneck == "linear" else self.embedding_size


@dataclass
class RunConfig:
    """A training run. Build one with ``recipe(dataset, loss, resolution)`` and adjust it with
    ``with_overrides(**kw)`` or ``with_sets(["lr=1e-4", "loss.lam=0.3", "model.pooling=avg"])``."""

    dataset: str
    loss: str
    resolution: int = 256  # recipe family: 224 (224x224/train.py) or 256 (main.py)
    convention: str = "256"  # hybrid-loss weighting convention (reference-implementation §1.4); recorded for every run
    profile: str = "fixed"  # "reference" | "fixed": which values the switches below got (ctxsim.train.profiles)
    recipe: str = "paper"  # recipe family: "paper" (ResNet-50, by resolution) or "vit-s16-224" (docs/recipes-vit.md)
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    track: list[str] = field(default_factory=list)  # trackers that mirror the run (ctxsim.trackers): tensorboard, mlflow, wandb
    # data
    root: Optional[str] = None
    xform_scale: Optional[float] = None  # RandomResizedCrop lower scale (None: the dataset pipeline's default)
    skip_bad_images: bool = False
    num_workers: int = 4
    data_kw: dict[str, Any] = field(default_factory=dict)
    # sampling
    batch_size: int = 128
    sampler: str = "random256"
    samples_per_class: int = 4  # IPC
    sampler_kw: dict[str, Any] = field(default_factory=dict)
    # model and loss
    model: ModelSpec = field(default_factory=ModelSpec)
    loss_kw: dict[str, Any] = field(default_factory=dict)
    # optimisation
    epochs: int = 80
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 1.0
    embedding_lr_mult: float = 1.0
    bottleneck_lr_mult: float = 1.0
    proxy_lr_mult: float = 100.0  # proxies as a param group of the main optimizer (224)
    proxy_lr: Optional[float] = None  # set: proxies get their own Adam at this lr (256 --loss_lr)
    separate_optimizers: bool = False  # 256: backbone and head in two Adam optimizers
    schedule: str = "multistep"
    lr_decay_step: int = 10
    lr_decay_gamma: float = 0.3
    milestones: list[int] = field(default_factory=lambda: [15, 30, 45])
    warm: int = 0  # warm-up epochs with all but the embedding frozen (reference-implementation §3.1)
    clip_grad: Optional[float] = None
    amp: bool = True  # used on CUDA only
    # reference bugs (reference-implementation §9), off by default
    proxies_per_image: bool = False  # §2.1 / §9.4: one proxy per training image (224 nb_classes bug)
    proxy_grad_accumulate: bool = False  # §9.5: proxy optimizer never zeroes its grads (256)
    jpeg_draft: bool = True  # decode large JPEGs in PIL draft mode (False: full decoding, as the reference)
    bottleneck_fp32: bool = False  # the bottleneck (projector) in fp32 after autocast, as the 224 code
    rrc_ratio: Optional[list[float]] = None  # RandomResizedCrop aspect range; None: (3/4, 4/3)
    # evaluation and selection
    eval_every: int = 5  # epochs; the last epoch is always evaluated; 0 = last only
    eval_batch_size: int = 128
    # working memory of the retrieval metrics in GiB (``--set eval.memory_gb=8``; None: $CTXSIM_EVAL_MEMORY_GB
    # or 2): queries are processed in blocks that fit; the results are exact whatever the budget
    eval_memory_gb: Optional[float] = None
    # scores of the retrieval metrics (``--set eval.precision=float64``): float32 (faiss or torch), or float64
    # (torch matmul; ranks near-ties as a float64 reference does, slower)
    eval_precision: str = "float32"
    ks: Optional[list[int]] = None  # None: the dataset's standard K list
    select: str = "last"  # "best" picks the best select_metric over evals (on val_classes if set, else on test)
    # class-disjoint validation split carved from the training classes: a count (2) or a fraction of the
    # training classes (0.4); the last N training classes in class-id order (ctxsim.data.val_split).
    # Set: evaluations during training are on it, and the test split is evaluated once, at the end,
    # on the selected model. None or 0: no validation split.
    val_classes: Optional[float] = None
    select_metric: str = "R@1"
    full_map: bool = False  # also report mAP over the full ranking (224 CUB/Cars)
    # reproducibility and hardware
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    max_steps_per_epoch: Optional[int] = None  # cap (tests, smoke runs); None = the sampler's length

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = _from_dict(ModelSpec, self.model, prefix="model.")
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Raises ConfigError naming the first invalid value."""
        _typecheck(self, "")
        _typecheck(self.model, "model.")
        choices = {
            "convention": CONVENTIONS, "sampler": SAMPLERS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
            "select": SELECTS, "device": DEVICES, "profile": PROFILES, "recipe": RECIPE_FAMILIES,
        }
        for key, allowed in choices.items():
            _choice(key, getattr(self, key), allowed)
        if not (self.model.arch.startswith("timm:") and len(self.model.arch) > len("timm:")):
            _choice("model.arch", self.model.arch, ARCHS)
        _choice("model.pooling", self.model.pooling, POOLINGS)
        _choice("model.bottleneck", self.model.bottleneck, BOTTLENECKS)
        _choice("model.bn_mode", self.model.bn_mode, BN_MODES)
        _choice("model.embedding_init", self.model.embedding_init, ("kaiming", "default", "orthogonal"))
        _choice("data.decode", self.data_kw.get("decode", "cpu"), DECODES)
        _choice("eval.precision", self.eval_precision, EVAL_PRECISIONS)
        if self.model.freeze_patch_embed and not self.model.arch.startswith("timm:"):
            raise ConfigError(f"model.freeze_patch_embed needs a timm transformer trunk (model.arch=timm:<vit>), "
                              f"not {self.model.arch}")
        check_tracker_names(self.track)
        if self.eval_memory_gb is not None and not self.eval_memory_gb > 0:
            raise ConfigError(f"eval.memory_gb must be > 0 GiB, got {self.eval_memory_gb}")
        if self.resolution not in (224, 256):
            raise ConfigError(f"resolution must be 224 or 256, got {self.resolution}")
        positive = ("batch_size", "epochs", "eval_batch_size")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("model.embedding_size", "model.bottleneck_size"):
            if getattr(self.model, key.split(".")[1]) <= 0:
                raise ConfigError(f"{key} must be > 0")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for key in ("weight_decay", "warm", "eval_every", "num_workers", "samples_per_class", "lr_decay_step"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.samples_per_class > 0 and self.sampler != "shuffle" and self.batch_size % self.samples_per_class:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of samples_per_class ({self.samples_per_class})"
            )
        if self.schedule == "step" and self.lr_decay_step <= 0:
            raise ConfigError("lr_decay_step must be > 0 with schedule=step")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError("max_steps_per_epoch must be > 0 or unset")
        if self.xform_scale is not None and not 0 < self.xform_scale <= 1:
            raise ConfigError(f"xform_scale must be in (0, 1], got {self.xform_scale}")
        if "convention" in self.loss_kw and str(self.loss_kw["convention"]) != self.convention:
            raise ConfigError("set the hybrid weighting with convention=224|256, not loss.convention")
        _check_val_classes(self.val_classes)
        if self.ks is not None and (not self.ks or any(k <= 0 for k in self.ks)):
            raise ConfigError("ks must be a non-empty list of positive integers")
        if self.rrc_ratio is not None and (len(self.rrc_ratio) != 2 or not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]):
            raise ConfigError(f"rrc_ratio must be two numbers 0 < low <= high, got {self.rrc_ratio}")
        return self

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return _from_dict(cls, d, prefix="")

    @classmethod
    def from_json(cls, s: str) -> "RunConfig":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(d)

    def config_hash(self, exclude: tuple[str, ...] = ()) -> str:
        """Stable 16-hex hash of what determines the results (not name/tags/root/num_workers)."""
        d = self.to_dict()
        for k in _UNHASHED + tuple(exclude):
            d.pop(k, None)
        for k, default in _HASHED_UNLESS_DEFAULT.items():
            if k in d and d[k] == default:
                del d[k]
        for k, default in _MODEL_HASHED_UNLESS_DEFAULT.items():
            if k in d.get("model", {}) and d["model"][k] == default:
                del d["model"][k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ---- overrides --------------------------------------------------------------------------
    def with_overrides(self, **kw: Any) -> "RunConfig":
        """A copy with top-level fields replaced (``model=`` may be a dict of ModelSpec fields)."""
        names = {f.name for f in fields(self)}
        for k in kw:
            if k not in names:
                raise ConfigError(_unknown_key_message(k, sorted(names)))
        d = self.to_dict()
        if isinstance(kw.get("model"), ModelSpec):
            kw["model"] = dataclasses.asdict(kw["model"])
        if isinstance(kw.get("model"), dict):
            kw["model"] = {**d["model"], **kw["model"]}
        d.update(kw)
        return RunConfig.from_dict(d)

    def with_sets(self, assignments: list[str]) -> "RunConfig":
        """Applies ``key=value`` strings. Keys: top-level fields, ``model.<field>``, and free
        ``loss.<kw>``, ``sampler.<kw>``, ``data.<kw>`` entries; values are parsed to the field's type."""
        d = self.to_dict()
        for a in assignments:
            if "=" not in a:
                raise ConfigError(f"--set expects key=value, got {a!r}")
            key, raw = (s.strip() for s in a.split("=", 1))
            if not key:
                raise ConfigError(f"--set expects key=value, got {a!r}")
            if key in ("eval.memory_gb", "eval.precision"):  # the evaluation's settings read as one namespace
                key = key.replace(".", "_")
            head, _, rest = key.partition(".")
            free = {"loss": "loss_kw", "sampler": "sampler_kw", "data": "data_kw"}
            if rest and head in free:
                if "." in rest:
                    raise ConfigError(f"nested keys are not supported: {key}")
                d[free[head]] = {**d[free[head]], rest: parse_literal(raw)}
            elif rest and head == "model":
                hints = _hints(ModelSpec)
                if rest not in hints:
                    raise ConfigError(_unknown_key_message(key, [f"model.{k}" for k in hints]))
                d["model"][rest] = _parse_typed(key, raw, hints[rest])
            else:
                hints = _hints(RunConfig)
                if key not in hints or rest:
                    known = [k for k in hints if k not in ("model", "loss_kw", "sampler_kw", "data_kw")]
                    known += [f"model.{k}" for k in _hints(ModelSpec)] + ["loss.<kw>", "sampler.<kw>", "data.<kw>"]
                    raise ConfigError(_unknown_key_message(key, known))
                if key in ("model", "loss_kw", "sampler_kw", "data_kw"):
                    raise ConfigError(f"set {key} entries one by one, e.g. {key.split('_')[0]}.<name>=value")
                d[key] = _parse_typed(key, raw, hints[key])
        return RunConfig.from_dict(d)

    def summary(self) -> str:
        """One line naming the run (for logs and progress bars)."""
        return f"{self.dataset}/{self.loss}/{self.resolution} seed={self.seed}"


# ---- helpers ---------------------------------------------------------------------------------
def _unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"unknown config key '{key}'{hint}"


def _check_val_classes(value: Any) -> None:
    """val_classes: None/0, a whole class count >= 1, or a fraction in (0, 1) (counts against the
    dataset's classes are checked when the data is built: ctxsim.data.val_split)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"),):
        raise ConfigError(f"val_classes must be a class count (e.g. 2) or a fraction of the training classes "
                          f"(e.g. 0.4), got {value!r}")
    if value < 0:
        raise ConfigError(f"val_classes must be >= 0 (0 = no validation split), got {value:g}")
    if value >= 1 and float(value) != int(value):
        raise ConfigError(f"val_classes {value:g} is neither a whole class count nor a fraction below 1")


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a config class, computed once (it re-evaluates every annotation:
    most of the time of building a config, and compare builds thousands)."""
    return typing.get_type_hints(cls)


def _from_dict(cls, d: dict[str, Any], prefix: str):
    hints = _hints(cls)
    unknown = [k for k in d if k not in hints]
    if unknown:
        raise ConfigError(_unknown_key_message(prefix + unknown[0], [prefix + k for k in hints]))
    kw = dict(d)
    required = [f.name for f in fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in kw]
    if missing:
        raise ConfigError(f"config lacks required key '{prefix + missing[0]}'")
    return cls(**kw)


def parse_literal(raw: str) -> Any:
    """Python/JSON-ish literal (numbers, true/false, null/none, lists); otherwise the string."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _parse_typed(key: str, raw: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _parse_typed(key, raw, inner[0])
    if tp is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} expects true/false, got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            try:
                f = float(raw)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ConfigError(f"{key} expects an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} expects a number, got {raw!r}") from None
    if tp is str:
        return raw
    if origin is list:
        val = parse_literal(raw) if raw.strip().startswith("[") else [p for p in raw.split(",") if p.strip()]
        if not isinstance(val, (list, tuple)):
            val = [val]
        return [_parse_typed(key, str(v), args[0]) for v in val]
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{key} must be one of {', '.join(args)}; got {raw!r}")
        return raw
    raise ConfigError(f"{key} cannot be set from the command line")  # pragma: no cover


def _is_instance(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        return any(_is_instance(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_is_instance(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _typecheck(obj: Any, prefix: str) -> None:
    hints = _hints(type(obj))
    for name, tp in hints.items():
        value = getattr(obj, name)
        if name == "model":
            continue
        if isinstance(value, tuple) and typing.get_origin(tp) is list:
            value = list(value)
            setattr(obj, name, value)
        if not _is_instance(value, tp):
            raise ConfigError(f"{prefix}{name} has the wrong type: {value!r}")
        if tp is float or (typing.get_origin(tp) is typing.Union and float in typing.get_args(tp)):
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(obj, name, float(value))
