"""Datasets, samplers and transforms (reference-implementation §3-4).

``build_data(name, root=None, resolution=256, **kw) -> DataBundle`` and
``build_batch_sampler(kind, labels, batch_size, samples_per_class=4, super_labels=None, seed=0, **kw)``.

Modules: datasets (the five benchmarks in the reference layouts), small (fashion-mnist, digits,
synthetic, icons), icons (building icons from the installed icon themes), samplers, transforms (recipe pipelines), prepare (download/extract/resize/verify) and
fake (tiny generated trees in each layout, for tests and smoke runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctxsim.errors import ConfigError
from ctxsim.names import DATASETS, PAPER_DATASETS_BY_RESOLUTION, canonical_dataset
from ctxsim.names import PAPER_DATASETS as BENCHMARKS
from ctxsim.names import SMALL_DATASETS as SMALL

if TYPE_CHECKING:
    from ctxsim.data.common import DataBundle
    from ctxsim.data.samplers import SAMPLERS, build_batch_sampler

# torch-backed names load on first use, so torch-free submodules (fingerprint, icons' manifest,
# prepare's checks) can be imported by the read commands without torch (PEP 562)
_LAZY = {"DataBundle": "ctxsim.data.common", "SAMPLERS": "ctxsim.data.samplers",
         "build_batch_sampler": "ctxsim.data.samplers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_sampler(dataset: str, resolution: int, batch_size: int = 128, ipc: int = 4, hierarchical: bool = None):
    """The reference's sampler (kind, keywords) for a dataset and resolution (reference-implementation §3.1-3.3).

    IPC 0 gives "shuffle"; 224 uses the hierarchical sampler where ``hierarchical`` (default: SOP)."""
    if ipc == 0:
        return "shuffle", {}
    if resolution == 256:
        if dataset == "cub":
            return "random256", {"num_batches": 42, "tries": 5}
        if dataset == "cars":
            return "random256", {"num_batches": 42, "tries": 10}
        if dataset == "inshop":
            return "random256", {"num_batches": 600, "tries": 10}
        if dataset == "sop":
            return "hierarchical", {"batches_per_super_pair": 10, "batch_multiplier": 66}
        if dataset == "inat":
            return "hierarchical", {"batches_per_super_pair": 10, "batch_multiplier": 70}
        return "m_per_class", {}
    if resolution == 224:
        if hierarchical or (hierarchical is None and dataset == "sop"):
            return "hierarchical", {"batches_per_super_pair": 10, "batch_multiplier": 66, "max_batches": 84480 // int(batch_size)}
        if dataset in PAPER_DATASETS_BY_RESOLUTION[224]:
            return "balanced224", {}
        return "m_per_class", {}
    raise ConfigError(f"resolution must be 224 or 256, got {resolution}")


def build_data(name: str, root=None, resolution: int = 256, **kw) -> "DataBundle":
    """Builds a dataset bundle by name (see DATASETS); ``root`` is the parent data directory."""
    key = canonical_dataset(name)  # ConfigError listing the choices
    if key in BENCHMARKS:
        from ctxsim.data.datasets import build_benchmark

        return build_benchmark(key, root=root, resolution=int(resolution), **kw)
    if key == "fashion-mnist":
        from ctxsim.data.small import build_fashion_mnist

        return build_fashion_mnist(root=root, **kw)
    if key == "digits":
        from ctxsim.data.small import build_digits

        return build_digits(**kw)
    if key == "icons":
        from ctxsim.data.small import build_icons

        return build_icons(root=root, **kw)
    if key == "synthetic":
        from ctxsim.data.small import build_synthetic

        return build_synthetic(**kw)
    raise ConfigError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")


__all__ = ["DataBundle", "build_data", "build_batch_sampler", "default_sampler", "SAMPLERS", "DATASETS",
           "BENCHMARKS", "SMALL"]
