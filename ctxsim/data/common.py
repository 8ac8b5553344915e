"""Shared data pieces: the DataBundle, split-file parsing, the image-list dataset with bad-image handling."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset

from ctxsim.errors import DataError, one_line

log = logging.getLogger(__name__)

SPLITS_DIR = Path(__file__).resolve().parent / "splits"


@dataclass
class DataBundle:
    """Everything a run needs from a dataset (gallery None means query == gallery)."""

    name: str
    train: Dataset
    query: Dataset
    gallery: Optional[Dataset]
    num_classes: int
    train_labels: np.ndarray
    train_super_labels: Optional[np.ndarray]
    ks: Tuple[int, ...]
    image_size: int
    in_channels: int
    root: Optional[str] = None
    info: dict = field(default_factory=dict)
    val: Optional["DataBundle"] = None  # class-disjoint validation split (ctxsim.data.val_split), if any


def shipped_split(filename: str) -> Path:
    """Path of a split file shipped in the package (reference-implementation §4.2)."""
    return SPLITS_DIR / filename


def sha256_file(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_lines(path: os.PathLike) -> List[str]:
    """The lines of a split file, or a DataError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError as e:
        raise DataError(f"cannot read split file {path}: {e.strerror or e}") from None


def read_space_split(path: os.PathLike) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Reads a reference list ``image_id class_id super_class_id path`` (header optional).

    Returns (relative paths, class ids, super class ids) exactly as written in the file (reference-implementation §4.2).
    """
    paths, cls, sup = [], [], []
    lines = _split_lines(path)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if n == 1 and "image_id" in line:
            continue
        parts = line.strip().split(" ")
        if len(parts) < 4:
            raise DataError(f"{path}:{n}: expected 'image_id class_id super_class_id path', got {line!r}")
        try:
            cls.append(int(parts[1]))
            sup.append(int(parts[2]))
        except ValueError:
            raise DataError(f"{path}:{n}: class ids must be integers, got {line!r}") from None
        paths.append(" ".join(parts[3:]))
    return paths, np.asarray(cls, dtype=np.int64), np.asarray(sup, dtype=np.int64)


def read_comma_split(path: os.PathLike) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Reads an iNat list ``path,superlabel,class_id`` without header (reference-implementation §4.1).

    Returns (relative paths, class ids, super labels).
    """
    paths, cls, sup = [], [], []
    lines = _split_lines(path)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(",")
        if len(parts) != 3:
            raise DataError(f"{path}:{n}: expected 'path,superlabel,class_id', got {line!r}")
        try:
            sup.append(int(parts[1]))
            cls.append(int(parts[2]))
        except ValueError:
            raise DataError(f"{path}:{n}: labels must be integers, got {line!r}") from None
        paths.append(parts[0].strip())
    return paths, np.asarray(cls, dtype=np.int64), np.asarray(sup, dtype=np.int64)


def contiguous(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Maps labels to 0..C-1 in sorted order; returns (mapped, sorted unique originals)."""
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64), uniq


class _Counter:
    """A bad-image counter shared with DataLoader worker processes (inherited at worker start).

    Falls back to a per-process count where shared memory is unavailable (no /dev/shm).
    """

    def __init__(self, start: int = 0):
        try:
            self._v = mp.get_context().Value("i", start)
        except (OSError, ImportError):  # pragma: no cover - sandboxes without semaphores
            self._v = None
            self._n = start

    def add(self, n: int = 1) -> None:
        if self._v is None:
            self._n += n
            return
        with self._v.get_lock():
            self._v.value += n

    @property
    def value(self) -> int:
        return int(self._n if self._v is None else self._v.value)

    def __getstate__(self):
        from multiprocessing.context import get_spawning_popen

        if self._v is not None and get_spawning_popen() is not None:  # a worker start: share the counter
            return {"v": self._v}
        return {"n": self.value}  # a plain pickle/deepcopy: a detached copy

    def __setstate__(self, state):
        if "v" in state:
            self._v = state["v"]
        else:
            self.__init__(state["n"])


class ImageListDataset(Dataset):
    """Images listed by relative path under ``base``; yields (tensor, label).

    ``labels`` are what __getitem__ returns; ``class_ids`` keep the ids of the split file. A file that
    cannot be decoded raises DataError naming it, or with ``skip_bad_images=True`` is replaced by the
    next readable index and counted in ``bad_image_count`` (shared across DataLoader workers).
    """

    def __init__(self, base: os.PathLike, relpaths: Sequence[str], labels: np.ndarray, transform: Callable,
                 class_ids: Optional[np.ndarray] = None, super_labels: Optional[np.ndarray] = None,
                 skip_bad_images: bool = False, name: str = ""):
        self.base = str(base)
        self.relpaths = list(relpaths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_ids = self.labels if class_ids is None else np.asarray(class_ids, dtype=np.int64)
        self.super_labels = None if super_labels is None else np.asarray(super_labels, dtype=np.int64)
        self.transform = transform
        self.skip_bad_images = bool(skip_bad_images)
        self.name = name
        self._bad = _Counter()

    def __len__(self) -> int:
        return len(self.relpaths)

    @property
    def bad_image_count(self) -> int:
        """How many unreadable images were skipped so far (all worker processes)."""
        return self._bad.value

    def path(self, index: int) -> str:
        return os.path.join(self.base, self.relpaths[index])

    def _load(self, index: int):
        return self.transform(self.path(index))

    def __getitem__(self, index: int):
        index = int(index)
        try:
            return self._load(index), int(self.labels[index])
        except Exception as e:  # decode/IO errors of any kind: name the file
            if not self.skip_bad_images:
                raise DataError(f"cannot read image {self.path(index)}: {_reason(e)}") from None
            self._bad.add(1)
            log.warning("skipping unreadable image %s: %s", self.path(index), _reason(e))
        # substitute the next readable image of the same class (keeps batch composition), then any
        same = np.flatnonzero(self.labels == self.labels[index])
        pos = int(np.searchsorted(same, index))
        order = [int(same[(pos + s) % len(same)]) for s in range(1, len(same))]
        order += [(index + s) % len(self) for s in range(1, len(self)) if self.labels[(index + s) % len(self)] != self.labels[index]]
        for i in order:
            try:
                return self._load(i), int(self.labels[i])
            except Exception as e:
                self._bad.add(1)
                log.warning("skipping unreadable image %s: %s", self.path(i), _reason(e))
        raise DataError(f"no readable image in {self.base}")


def check_image(path: str) -> Optional[str]:
    """None if the image at ``path`` decodes, else "missing" or the decoder's one-line complaint
    (``ctxsim data verify`` and the preflight's sample of images)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
        return None
    except FileNotFoundError:
        return "missing"
    except Exception as e:
        return one_line(e)


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    return one_line(e)
