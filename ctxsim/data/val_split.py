"""A class-disjoint validation split carved out of the training classes (config key ``val_classes``).

The rule, the same for every dataset: the training labels are the contiguous ids 0..C-1 in class-id
order (the split file's class ids, or the small datasets' digits), and the **last** N of them become
the validation classes; training keeps the first C-N. N is ``val_classes`` when it is a whole number
>= 1, else ``round(val_classes * C)`` for a fraction in (0, 1). Validation needs at least 2 classes and
training keeps at least 2. The validation images are the held-out classes' training images with the
evaluation transform, retrieved among themselves (query = gallery, self excluded), like the test
split of the small datasets. The test split is untouched. Nothing is random: the split is the same
for every seed and machine, and the data fingerprint records it (``ctxsim.data.fingerprint``).

Example: fashion-mnist trains on classes 0-4; ``val_classes=2`` (or ``0.4``) trains on 0-2 and
validates on 3-4 (dress, coat); the test classes stay 5-9.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from ctxsim.data.common import DataBundle
from ctxsim.errors import ConfigError

VAL_RULE = "last N training classes in class-id order"


def val_class_count(value: Any, num_train_classes: int) -> int:
    """How many of ``num_train_classes`` training classes ``val_classes`` holds out (0: none)."""
    if not value:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (value >= 1 and float(value) != int(value)):
        raise ConfigError(f"val_classes must be a class count (e.g. 2) or a fraction below 1 (e.g. 0.4), got {value!r}")
    n = int(value) if value >= 1 else int(math.floor(value * num_train_classes + 0.5))
    what = f"val_classes={value:g} of {num_train_classes} training classes"
    if n < 2:
        raise ConfigError(f"{what} is {n} class; validation needs at least 2 classes")
    if num_train_classes - n < 2:
        raise ConfigError(f"{what} leaves {num_train_classes - n} for training; training needs at least 2")
    return n


def val_class_ids(train_labels: np.ndarray, value: Any) -> list[int]:
    """The held-out training labels: the last ``val_class_count`` of the sorted distinct labels."""
    classes = np.unique(np.asarray(train_labels))
    n = val_class_count(value, len(classes))
    return [int(c) for c in classes[len(classes) - n:]] if n else []


class ClassSubset(Dataset):
    """The images ``indices`` of ``base`` (a labelled dataset), with ``base``'s labels, optionally
    through another ``transform`` (set on a shallow copy of ``base``, which is left unchanged)."""

    def __init__(self, base: Dataset, indices: np.ndarray, transform=None, name: str = "") -> None:
        if transform is not None:
            base = copy.copy(base)
            base.transform = transform
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(base.labels)[self.indices]
        ids = getattr(base, "class_ids", None)
        self.class_ids = np.asarray(ids)[self.indices] if ids is not None else self.labels
        sup = getattr(base, "super_labels", None)
        self.super_labels = np.asarray(sup)[self.indices] if sup is not None else None
        self.transform = getattr(base, "transform", None)
        self.name = name or getattr(base, "name", "")

    @property
    def bad_image_count(self) -> int:
        return int(getattr(self.base, "bad_image_count", 0) or 0)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[int(self.indices[int(index)])]


def split_validation(data: DataBundle, value: Any) -> DataBundle:
    """``data`` with its training classes split by ``value`` (the module's rule): ``train`` and
    ``train_labels`` keep the first classes, ``val`` is a bundle (query = gallery) of the held-out
    ones. Unchanged (``val`` None) when ``value`` is None or 0."""
    held = val_class_ids(data.train_labels, value)
    if not held:
        return data
    labels = np.asarray(data.train_labels)
    is_val = np.isin(labels, held)
    keep, hold = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    train = ClassSubset(data.train, keep, name=f"{getattr(data.train, 'name', data.name)}[train classes]")
    val = ClassSubset(data.train, hold, transform=getattr(data.query, "transform", None),
                      name=f"{data.name}/val")
    sup = data.train_super_labels
    val_bundle = dataclasses.replace(
        data, train=val, query=val, gallery=None, num_classes=len(held), train_labels=labels[hold],
        train_super_labels=np.asarray(sup)[hold] if sup is not None else None, val=None,
        info={**data.info, "split": "val"})
    return dataclasses.replace(
        data, train=train, train_labels=labels[keep], num_classes=int(len(np.unique(labels[keep]))),
        train_super_labels=np.asarray(sup)[keep] if sup is not None else None, val=val_bundle,
        info={**data.info, "val_classes": held, "val_rule": VAL_RULE})


def describe_split(data: DataBundle) -> Optional[dict[str, Any]]:
    """What the fingerprint records of a bundle's validation split: the rule, its classes (training
    labels) and its image count; None without one."""
    val = getattr(data, "val", None)
    if val is None:
        return None
    return {"rule": VAL_RULE, "held_out_labels": list(data.info.get("val_classes", [])), "images": int(len(val.query))}
