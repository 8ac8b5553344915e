"""Import the authors' released models (docs/reference-implementation.md §3.2, §6.3) as ctxsim checkpoints.

The reference README links saved models at its GitHub release v1.0.0
(github.com/Chris210634/metric-learning-using-contextual-similarity/releases/tag/v1.0.0). Each is
what ``main.py`` saves: ``torch.save((model.module, loss_list, scaler), path)`` with ``model`` a
``DataParallel(CUB_Network(...))`` (CUB, Cars: ResNet-50 with global max pooling, fc = Identity,
LayerNorm(2048, no affine), remap Linear(2048 -> 512)) or ``DataParallel(SOP_Network(...))`` (SOP,
iNat, In-Shop: average pooling, no LayerNorm). A file holding the DataParallel wrapper itself is
accepted too. The file is read by ``ctxsim.reference.unpickle`` (no reference code imported, no
unrestricted unpickling), its tensors are moved into the ctxsim model of the same architecture,
the two forwards are compared on random input, and a ctxsim checkpoint is written that
``ctxsim eval`` and ``load_checkpoint_model`` read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ctxsim.errors import ConfigError
from ctxsim.reference.unpickle import ReferenceFormatError, Stub, restricted_load

# docs/reference-implementation.md §3.2: which reference network a dataset's main.py run uses
NETWORK_OF_DATASET = {"cub": "CUB_Network", "cars": "CUB_Network", "sop": "SOP_Network",
                      "inat": "SOP_Network", "inshop": "SOP_Network"}
RELEASE_URL = "https://github.com/Chris210634/metric-learning-using-contextual-similarity/releases/tag/v1.0.0"
BACKBONE_DIM = 2048


@dataclass
class ReferenceModel:
    """What a reference model file holds, as plain data."""

    network: str  # "CUB_Network" | "SOP_Network"
    state_dict: dict[str, torch.Tensor]  # the network's state_dict keys (backbone.*, remap.*)
    pooling: str  # "max" | "avg" (the backbone's avgpool module)
    layernorm: bool
    layernorm_eps: float
    embedding_size: int
    wrapped: bool  # the file held DataParallel(network) rather than the network
    loss_list: list[float] = field(default_factory=list)
    scaler: dict[str, Any] = field(default_factory=dict)


def _modules(stub: Stub) -> dict[str, Any]:
    mods = stub.state.get("_modules")
    if mods is None:
        return {}
    if not isinstance(mods, dict):
        raise ReferenceFormatError(f"{stub.qualname}: malformed _modules")
    return mods


def _flatten_state(stub: Stub, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """nn.Module.state_dict of a stand-in tree: parameters, then persistent buffers, then children."""
    st = stub.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = st.get(group) or {}
        if not isinstance(entries, dict):
            raise ReferenceFormatError(f"{stub.qualname}: malformed {group}")
        for k, v in entries.items():
            if v is None or (group == "_buffers" and k in skip):
                continue
            if not isinstance(v, torch.Tensor):
                raise ReferenceFormatError(f"{prefix}{k} is not a tensor")
            out[prefix + k] = v
    for name, child in _modules(stub).items():
        if child is None:
            continue
        if not isinstance(child, Stub):
            raise ReferenceFormatError(f"{prefix}{name} is not a module")
        _flatten_state(child, f"{prefix}{name}.", out)


def read_reference(path: str | os.PathLike) -> ReferenceModel:
    """Reads a reference ``main.py`` model file with the restricted unpickler; ReferenceFormatError
    (one line) when it is not one."""
    path = Path(path)
    obj = restricted_load(path)
    module, loss_list, scaler = obj, [], None
    if isinstance(obj, tuple):
        if not 1 <= len(obj) <= 3:
            raise ReferenceFormatError(f"{path.name}: expected (module, loss_list, scaler), got a {len(obj)}-tuple")
        module = obj[0]
        loss_list = obj[1] if len(obj) > 1 else []
        scaler = obj[2] if len(obj) > 2 else None
    wrapped = False
    if isinstance(module, Stub) and module.short_name == "DataParallel":
        module = _modules(module).get("module")
        wrapped = True
    if not (isinstance(module, Stub) and module.short_name in ("CUB_Network", "SOP_Network")):
        got = module.qualname if isinstance(module, Stub) else type(module).__name__
        raise ReferenceFormatError(f"{path.name}: expected a CUB_Network or SOP_Network, found {got}")
    mods = _modules(module)
    backbone, remap = mods.get("backbone"), mods.get("remap")
    if not (isinstance(backbone, Stub) and backbone.short_name == "ResNet"):
        raise ReferenceFormatError(f"{path.name}: {module.short_name}.backbone is not a torchvision ResNet")
    if not (isinstance(remap, Stub) and remap.short_name == "Linear"):
        raise ReferenceFormatError(f"{path.name}: {module.short_name}.remap is not a Linear layer")
    pool = _modules(backbone).get("avgpool")
    pool_name = pool.short_name if isinstance(pool, Stub) else None
    if pool_name not in ("AdaptiveMaxPool2d", "AdaptiveAvgPool2d"):
        raise ReferenceFormatError(f"{path.name}: backbone.avgpool is {pool_name}, not an adaptive max/avg pool")
    fc = _modules(backbone).get("fc")
    if not (isinstance(fc, Stub) and fc.short_name == "Identity"):
        raise ReferenceFormatError(f"{path.name}: backbone.fc is not Identity (not a main.py network)")
    std = mods.get("standardize")
    layernorm, ln_eps = False, 1e-5
    if std is not None:
        if not (isinstance(std, Stub) and std.short_name == "LayerNorm"):
            raise ReferenceFormatError(f"{path.name}: standardize is not a LayerNorm")
        if std.state.get("elementwise_affine"):
            raise ReferenceFormatError(f"{path.name}: standardize LayerNorm has affine weights (not the reference's)")
        if tuple(std.state.get("normalized_shape", ())) != (BACKBONE_DIM,):
            raise ReferenceFormatError(f"{path.name}: standardize LayerNorm is not over {BACKBONE_DIM} features")
        layernorm, ln_eps = True, float(std.state.get("eps", 1e-5))
    extra = sorted(set(mods) - {"backbone", "remap", "standardize"})
    if extra:
        raise ReferenceFormatError(f"{path.name}: unexpected submodules {', '.join(extra)}")
    state: dict[str, torch.Tensor] = {}
    _flatten_state(module, "", state)
    w, b = state.get("remap.weight"), state.get("remap.bias")
    if w is None or w.dim() != 2 or w.shape[1] != BACKBONE_DIM or b is None or b.shape != (w.shape[0],):
        raise ReferenceFormatError(f"{path.name}: remap is not a Linear({BACKBONE_DIM} -> E) with bias")
    losses = [float(v) for v in loss_list] if isinstance(loss_list, (list, tuple)) else []
    scaler_state = {k: v for k, v in (scaler.state.items() if isinstance(scaler, Stub) else [])
                    if isinstance(v, (bool, int, float, str))}
    return ReferenceModel(
        network=module.short_name, state_dict=state, pooling="max" if pool_name == "AdaptiveMaxPool2d" else "avg",
        layernorm=layernorm, layernorm_eps=ln_eps, embedding_size=int(w.shape[0]), wrapped=wrapped,
        loss_list=losses, scaler=scaler_state,
    )


class ReferenceNetwork(nn.Module):
    """The reference's CUB_Network / SOP_Network rebuilt from torchvision parts
    (docs/reference-implementation.md §3.2), used to check a conversion; forward in fp32 (the
    reference ran it under autocast)."""

    def __init__(self, ref: ReferenceModel) -> None:
        super().__init__()
        import torchvision

        with torch.device("meta"):  # no random init: every tensor comes from the file
            self.backbone = torchvision.models.resnet50(weights=None)
            self.backbone.avgpool = nn.AdaptiveMaxPool2d((1, 1)) if ref.pooling == "max" else nn.AdaptiveAvgPool2d((1, 1))
            self.backbone.fc = nn.Identity()
            self.standardize = nn.LayerNorm(BACKBONE_DIM, eps=ref.layernorm_eps, elementwise_affine=False) if ref.layernorm else None
            self.remap = nn.Linear(BACKBONE_DIM, ref.embedding_size, bias=True)
        missing, unexpected = self.load_state_dict(ref.state_dict, strict=False, assign=True)
        if missing or unexpected:
            what = (f"missing {', '.join(missing[:3])}" if missing else "") + (
                f" unexpected {', '.join(unexpected[:3])}" if unexpected else "")
            raise ReferenceFormatError(f"the file's backbone is not a torchvision ResNet-50 ({what.strip()})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)
        if self.standardize is not None:
            h = self.standardize(h)
        return F.normalize(self.remap(h))


def reference_config(ref: ReferenceModel, dataset: str) -> Any:
    """The RunConfig of an imported model: the dataset's 256 hybrid recipe
    (docs/reference-implementation.md §3.2) with the file's architecture (pooling, LayerNorm,
    embedding size, identity bottleneck, no download)."""
    from ctxsim.train import recipe

    base = recipe(dataset, "hybrid", 256)
    return base.with_overrides(
        name=f"reference-release-{dataset}", tags=sorted(set(base.tags) | {"reference-release"}),
        model={"arch": "resnet50", "pooling": ref.pooling, "layernorm": ref.layernorm,
               "embedding_size": ref.embedding_size, "bottleneck": "identity", "backbone_weights": None},
    )


def _prefix_of(names: list[str]) -> str:
    common = os.path.commonprefix(names)
    return common[: common.rfind(".") + 1] if "." in common else ""


def convert_state(ref: ReferenceModel, model: nn.Module) -> dict[str, torch.Tensor]:
    """The ctxsim model's state_dict filled with the file's tensors.

    backbone.* keys go under the ctxsim backbone's prefix (the common prefix of the parameters in
    ``model.param_groups()["backbone"]``); remap.weight/bias go to the embedding Linear. Every key
    of the ctxsim model must be filled, with the same shape."""
    target = model.state_dict()
    groups = model.param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    bb_names = [names[id(p)] for p in groups.get("backbone", []) if id(p) in names]
    emb_names = [names[id(p)] for p in groups.get("embedding", []) if id(p) in names]
    if not bb_names or not emb_names:
        raise ConfigError("the ctxsim model exposes no backbone/embedding parameter groups")
    bb_prefix = _prefix_of(bb_names)
    out: dict[str, torch.Tensor] = {}
    for k, v in ref.state_dict.items():
        if k.startswith("backbone."):
            tk = bb_prefix + k[len("backbone."):]
        elif k in ("remap.weight", "remap.bias"):
            want = 2 if k.endswith("weight") else 1
            cands = [n for n in emb_names if target[n].dim() == want]
            if len(cands) != 1:
                raise ConfigError(f"cannot place {k}: the ctxsim embedding layer has {len(cands)} candidates")
            tk = cands[0]
        else:
            raise ReferenceFormatError(f"unexpected tensor {k} in the reference model")
        if tk not in target:
            raise ReferenceFormatError(f"the reference tensor {k} has no place in the ctxsim model ({tk})")
        if tuple(target[tk].shape) != tuple(v.shape):
            raise ReferenceFormatError(f"{k} has shape {tuple(v.shape)}, the ctxsim model wants {tuple(target[tk].shape)}")
        out[tk] = v.to(target[tk].dtype)
    missing = sorted(set(target) - set(out))
    if missing:
        raise ReferenceFormatError(f"the reference file lacks {len(missing)} tensors the ctxsim model needs, e.g. {missing[0]}")
    return out


def _model_with_weights(cfg: Any, ref: ReferenceModel) -> nn.Module:
    """The ctxsim model of ``cfg`` holding the file's tensors, in eval mode. Built on the meta device
    (skipping a pointless random init of 25M parameters) when every tensor is then assigned."""
    from ctxsim.train.checkpoint import build_model_for

    with torch.device("meta"):
        model = build_model_for(cfg, 3)
    model.load_state_dict(convert_state(ref, model), assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = build_model_for(cfg, 3)  # the model keeps state outside its state_dict: build it for real
        model.load_state_dict(convert_state(ref, model))
    return model.eval()


@dataclass
class ImportResult:
    checkpoint: Path
    network: str
    dataset: str
    embedding_size: int
    pooling: str
    layernorm: bool
    max_abs_diff: float
    check_input: tuple[int, ...]
    sha256: str
    n_tensors: int
    n_losses: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["checkpoint"] = str(self.checkpoint)
        d["check_input"] = list(self.check_input)
        return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_reference(path: str | os.PathLike, dataset: str, out: Optional[str | os.PathLike] = None,
                     check_size: int = 64, tolerance: float = 1e-4, seed: int = 0) -> ImportResult:
    """Converts a reference model file into a ctxsim checkpoint (default ``<file stem>.ctxsim.pt``).

    After conversion the ctxsim model and the torchvision rebuild of the reference network embed
    the same random batch (2 x 3 x check_size^2, eval mode, fp32); a max |difference| above
    ``tolerance`` aborts the import.
    """
    from ctxsim.names import canonical_dataset as normalize_dataset
    from ctxsim.train.checkpoint import FORMAT_VERSION, atomic_save

    src = Path(path)
    ds = normalize_dataset(dataset)
    if ds not in NETWORK_OF_DATASET:
        raise ConfigError(f"reference models exist for {', '.join(NETWORK_OF_DATASET)}; got --dataset {dataset}")
    ref = read_reference(src)
    expected = NETWORK_OF_DATASET[ds]
    if ref.network != expected:
        raise ConfigError(f"{src.name} holds a {ref.network}, but the reference trains {ds} with a {expected}")
    cfg = reference_config(ref, ds)
    model = _model_with_weights(cfg, ref)
    check = ReferenceNetwork(ref).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, check_size, check_size, generator=g)
    with torch.no_grad():
        diff = float((model(x).float() - check(x).float()).abs().max())
    if not diff <= tolerance:
        raise ReferenceFormatError(
            f"converted model differs from the reference network by {diff:.2e} (> {tolerance:g}); not written")
    dst = Path(out) if out else src.with_name(src.stem + ".ctxsim.pt")
    sha = _sha256(src)
    ck = {
        "format_version": FORMAT_VERSION, "config": cfg.to_dict(), "model": model.state_dict(),
        "best_model": None, "in_channels": 3, "epoch": None,
        "source": {"kind": "reference-release", "file": src.name, "sha256": sha, "network": ref.network,
                   "wrapped_in_dataparallel": ref.wrapped, "n_losses": len(ref.loss_list),
                   "last_loss": ref.loss_list[-1] if ref.loss_list else None, "scaler": ref.scaler,
                   "max_abs_diff": diff, "release": RELEASE_URL},
    }
    atomic_save(ck, dst)
    return ImportResult(dst, ref.network, ds, ref.embedding_size, ref.pooling, ref.layernorm, diff,
                        tuple(x.shape), sha, len(ref.state_dict), len(ref.loss_list))


def _reference_source(ck_path: Path, ck: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The ``source`` record of an imported checkpoint (``ck``: its content when already loaded);
    ConfigError when it is not one."""
    from ctxsim.train.checkpoint import load_checkpoint

    source = (ck if ck is not None else load_checkpoint(ck_path)).get("source") or {}
    if source.get("kind") != "reference-release":
        raise ConfigError(f"{ck_path.name} is not an imported reference model (run ctxsim import-reference first)")
    return source


def reference_eval_config(checkpoint: str | os.PathLike, cfg: Any, root: Optional[str] = None,
                          batch_size: Optional[int] = None) -> dict[str, Any]:
    """The config of a ``reference-eval`` job (see ``ctxsim.runner.kinds``): the checkpoint to
    evaluate, the dataset root and batch size, the job columns (dataset, loss, resolution, seed,
    epochs) of the checkpoint's RunConfig, and that RunConfig itself under ``"config"``."""
    return {"kind": "reference-eval", "checkpoint": str(Path(checkpoint).absolute()), "root": root,
            "batch_size": batch_size, "dataset": cfg.dataset, "loss": cfg.loss, "resolution": cfg.resolution,
            "seed": cfg.seed, "epochs": cfg.epochs, "config": cfg.to_dict()}


def run_reference_eval_job(cfg: dict[str, Any], sink: Any, run_dir: str | os.PathLike,
                           should_stop: Any = None) -> dict[str, float]:
    """Entry of the ``reference-eval`` job kind: evaluates an imported checkpoint with ctxsim's one
    evaluation (``ctxsim.eval.evaluate_bundle``; reference-implementation.md "Evaluation") and
    emits start / log / eval / done. Its one evaluation is reported as the final model of the
    80-epoch run, selected on the test set as main.py did. Returns the metrics (fractions)."""
    from ctxsim.eval import evaluate_bundle
    from ctxsim.runner.kinds import RUNTIME_DEVICE
    from ctxsim.train.build import build_run_data, resolve_device
    from ctxsim.train.checkpoint import load_checkpoint_model
    from ctxsim.train.events import Event

    ck_path = Path(cfg["checkpoint"])
    source = _reference_source(ck_path)
    model, rcfg = load_checkpoint_model(ck_path)
    if cfg.get("root") is not None:
        rcfg = rcfg.with_overrides(root=cfg["root"])
    dev = resolve_device(cfg.get(RUNTIME_DEVICE, "auto"))
    data = build_run_data(rcfg)
    sink.emit(Event("start", {"config": rcfg.to_dict(), "run_dir": str(run_dir), "epochs": rcfg.epochs,
                              "steps_per_epoch": 0, "start_epoch": rcfg.epochs}))
    sink.emit(Event("log", {"message": f"reference release {source.get('file')} (sha256 {source.get('sha256')}) "
                                       f"imported as {ck_path}"}))
    metrics = evaluate_bundle(model.to(dev).eval(), data, device=str(dev),
                              batch_size=cfg.get("batch_size") or rcfg.eval_batch_size,
                              num_workers=min(rcfg.num_workers, 4, os.cpu_count() or 1), ks=rcfg.ks or None,
                              amp=rcfg.amp and dev.type == "cuda")
    metrics = {k: float(v) for k, v in metrics.items()}
    sink.emit(Event("eval", {"epoch": rcfg.epochs, "metrics": metrics, "split": "test"}))
    sink.emit(Event("done", {"metrics": metrics, "selected": "best", "best_epoch": None, "selected_on": "test"}))
    return metrics


def evaluate_reference_checkpoint(reg: Any, checkpoint: str | os.PathLike, root: Optional[str] = None,
                                  device: str = "auto", batch_size: Optional[int] = None,
                                  extra_sink: Any = None) -> tuple[int, dict[str, float]]:
    """Evaluates an imported checkpoint with ctxsim's evaluation (the same path as ``ctxsim eval``)
    and records it in the registry, so that ``ctxsim compare`` shows it beside the paper's numbers:
    (job id, metrics as fractions).

    The evaluation is a ``reference-eval`` job (its config: ``reference_eval_config``) queued for
    the foreground and run here through the runner's one claim / heartbeat / finish lifecycle
    (``ctxsim.runner.job.run_job_foreground``), like any recorded run. The checkpoint and the
    dataset are checked first, so that a bad one fails with one line before anything is recorded.
    """
    from ctxsim.registry import jobs
    from ctxsim.runner.job import run_job_foreground
    from ctxsim.train import RunConfig
    from ctxsim.train.build import build_run_data
    from ctxsim.train.checkpoint import load_checkpoint

    ck_path = Path(checkpoint).absolute()
    ck = load_checkpoint(ck_path)
    _reference_source(ck_path, ck)
    cfg = RunConfig.from_dict(ck["config"])
    del ck
    if root is not None:
        cfg = cfg.with_overrides(root=root)
    build_run_data(cfg)  # fails here (DataError, one line) before anything is recorded
    job_cfg = reference_eval_config(ck_path, cfg, root=root, batch_size=batch_size)
    jid = jobs.enqueue(reg, job_cfg, name=cfg.name, tags=cfg.tags, executor=jobs.FOREGROUND, force=True)
    return jid, run_job_foreground(reg, jid, extra_sink=extra_sink, device=device)
