"""Per-query results of an evaluation, kept compactly for paired comparisons of runs.

``per_query.npz`` in a run folder holds, for the selected model's evaluation, one entry per query in
the dataset's query order: ``hit1`` (uint8: the nearest neighbour shares the label), ``ap_at_r``
(float16: the query's term of MAP@R, NaN for a lone query), ``lone`` (bool: no same-label gallery
item), ``labels`` (int32) and ``epoch``. The means over the counted queries are R@1 and MAP@R
(``PerQuery.r_at_1``, ``PerQuery.map_at_r``). About 0.3 MB for SOP's 60,502 queries.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ctxsim.errors import DataError

PER_QUERY_NAME = "per_query.npz"
_KEYS = ("hit1", "ap_at_r", "lone", "labels", "epoch")


@dataclass
class PerQuery:
    """hit@1 and AP@R of every query (see the module docstring for the arrays)."""

    hit1: np.ndarray  # uint8 [n]
    ap_at_r: np.ndarray  # float16 [n], NaN where lone
    lone: np.ndarray  # bool [n]
    labels: np.ndarray  # int32 [n]
    epoch: Optional[int] = None

    def __len__(self) -> int:
        return int(self.hit1.shape[0])

    @classmethod
    def from_stats(cls, stats: dict, labels, epoch: Optional[int] = None) -> "PerQuery":
        """From ``ctxsim.eval.metrics.query_stats`` output (with map_at_r) and the query labels."""
        first = np.asarray(stats["first_hit"])
        lone = np.asarray(stats["lone"], dtype=bool)
        ap = np.asarray(stats["ap_at_r"], dtype=np.float64) if "ap_at_r" in stats else np.full(len(first), np.nan)
        labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int32)
        return cls(hit1=((first == 1) & ~lone).astype(np.uint8), ap_at_r=ap.astype(np.float16), lone=lone,
                   labels=labels, epoch=epoch)

    def r_at_1(self) -> float:
        """R@1 (lone queries left out, as ``retrieval_metrics`` does by default)."""
        keep = ~self.lone
        return float(self.hit1[keep].astype(np.float64).mean()) if keep.any() else float("nan")

    def map_at_r(self) -> float:
        """MAP@R: the mean AP@R of the non-lone queries (to float16 precision per query)."""
        keep = ~self.lone
        return float(self.ap_at_r[keep].astype(np.float64).mean()) if keep.any() else float("nan")


def save_per_query(path: os.PathLike, pq: PerQuery) -> Path:
    """Writes ``pq`` atomically as a compressed npz; returns the path."""
    from ctxsim.files import atomic_write

    with atomic_write(path) as fh:
        np.savez_compressed(fh, hit1=pq.hit1.astype(np.uint8), ap_at_r=pq.ap_at_r.astype(np.float16),
                            lone=pq.lone.astype(bool), labels=pq.labels.astype(np.int32),
                            epoch=np.int64(-1 if pq.epoch is None else pq.epoch))
    return Path(path)


def load_per_query(path: os.PathLike) -> PerQuery:
    """Reads a ``per_query.npz``; a missing or malformed file is a DataError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: not a per-query file (lacks {', '.join(missing)})")
            arrays = {k: z[k] for k in _KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read per-query results {path}: {e}") from None
    n = arrays["hit1"].shape[0]
    if any(arrays[k].shape != (n,) for k in ("ap_at_r", "lone", "labels")):
        raise DataError(f"{path}: per-query arrays differ in length")
    epoch = int(arrays["epoch"])
    return PerQuery(hit1=arrays["hit1"].astype(np.uint8), ap_at_r=arrays["ap_at_r"].astype(np.float16),
                    lone=arrays["lone"].astype(bool), labels=arrays["labels"].astype(np.int32),
                    epoch=None if epoch < 0 else epoch)
