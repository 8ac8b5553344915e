"""Checkpoints: atomic writes, plain-container contents (loadable with weights_only=True), RNG state."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ctxsim.errors import CtxsimError, one_line
from ctxsim.files import atomic_write
from ctxsim.train.config import RunConfig

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def to_plain(obj: Any) -> Any:
    """Converts numpy arrays/scalars inside containers to tensors/python numbers (weights_only-safe)."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj)), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_plain(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj and set(obj) == {"__ndarray__", "dtype"}:
            return obj["__ndarray__"].numpy().astype(obj["dtype"], copy=True)
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [from_plain(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    return obj


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as plain containers."""
    state = {
        "python": random.getstate(),
        "numpy": to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores the generator states saved by :func:`rng_state`."""
    random.setstate(_tuplify(state["python"]))
    np.random.set_state(from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return tuple(_tuplify(v) for v in x)
    return x


def atomic_save(obj: Any, path: os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then os.replace."""
    with atomic_write(path, fsync=True) as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint(path: os.PathLike, map_location: Any = "cpu") -> dict:
    """Loads a ctxsim checkpoint with ``weights_only=True``; CtxsimError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CtxsimError(f"no checkpoint at {path}")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle of a foreign object, ...
        raise CtxsimError(f"cannot read checkpoint {path}: {one_line(e)}") from None
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise CtxsimError(f"{path} is not a ctxsim checkpoint (no model/config)")
    return ck


def build_model_for(cfg: RunConfig, in_channels: int):
    """The model a config describes (weights not loaded: the checkpoint holds them)."""
    from ctxsim.models import build_model

    m = cfg.model
    return build_model(arch=m.arch, pooling=m.pooling, layernorm=m.layernorm, embedding_size=m.embedding_size,
                       bottleneck=m.bottleneck, bottleneck_size=m.bottleneck_size, backbone_weights=None,
                       bn_mode=m.bn_mode, in_channels=in_channels,
                       embedding_init=m.embedding_init, freeze_patch_embed=m.freeze_patch_embed)


def load_checkpoint_model(path: os.PathLike, which: Optional[str] = None):
    """(model in eval mode, RunConfig) from a checkpoint: the selected weights (the best ones for a
    ``select=best`` run, else the last); ``which="last"|"best"`` forces one."""
    ck = load_checkpoint(path)
    cfg = RunConfig.from_dict(ck["config"])
    if which is None:
        which = "best" if cfg.select == "best" and ck.get("best_model") is not None else "last"
    if which not in ("last", "best"):
        raise CtxsimError(f"which must be 'last' or 'best', got {which!r}")
    state = ck["model"] if which == "last" else ck.get("best_model")
    if state is None:
        raise CtxsimError(f"{path} holds no best model (the run had no evaluation yet)")
    model = build_model_for(cfg, int(ck.get("in_channels", 3)))
    model.load_state_dict(state)
    model.eval()
    return model, cfg
