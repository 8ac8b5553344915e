"""The small datasets' files, read without torch: IDX files (fashion-mnist) and scikit-learn's
bundled digits table, for ``ctxsim data verify`` and the loaders in ``ctxsim.data.small``."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ctxsim.errors import DataError

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
TRAIN_CLASSES = 5  # fashion-mnist and digits: train on classes 0-4, retrieve on 5-9


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (optionally gzipped): magic, dims, then big-endian uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file")
    zero, dtype, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({arr.size} of {int(np.prod(dims))} values)")
    return arr.reshape(dims)


def idx_shape(path: Path) -> tuple[int, ...]:
    """The dimensions of an IDX file without reading its data: the header, and for a gzipped file the
    uncompressed size its trailer records, which must match them (a truncated file fails)."""
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] != 0x08:
                raise DataError(f"{path} is not a uint8 IDX file")
            dims = struct.unpack(">" + "I" * head[3], f.read(4 * head[3]))
        size = path.stat().st_size
        if gz:
            with open(path, "rb") as raw:
                raw.seek(size - 4)
                size = struct.unpack("<I", raw.read(4))[0]  # ISIZE: uncompressed length mod 2**32
    except (OSError, EOFError, struct.error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    expected = 4 + 4 * len(dims) + int(np.prod(dims))
    if size != expected % (2**32 if gz else 2**64):
        raise DataError(f"{path} holds {size} bytes, its header says {expected}: truncated or corrupt")
    return dims


def find_fashion_dir(root: Optional[os.PathLike] = None, dirs: Sequence[str] = FASHION_DIRS) -> Path:
    """The directory holding the four fashion-mnist files (root, root/fashion-mnist, then ``dirs``)."""
    cands = []
    if root is not None:
        cands += [Path(root), Path(root) / "fashion-mnist"]
    cands += [Path(d) for d in dirs]
    for d in cands:
        if all((d / f).is_file() or (d / f[:-3]).is_file() for f in FASHION_FILES.values()):
            return d
    where = f"{root} or " if root is not None else ""
    raise DataError(
        f"fashion-mnist files not found in {where}{dirs[0] if dirs else FASHION_DIRS[0]}: "
        "apt-get install dataset-fashion-mnist, or pass --root DIR holding train-images-idx3-ubyte.gz etc."
    )


def fashion_file(d: Path, key: str) -> Path:
    p = d / FASHION_FILES[key]
    return p if p.is_file() else d / FASHION_FILES[key][:-3]


def digits_table() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (images [N, 8, 8] in 0..16, labels), read from its data file
    without importing scikit-learn (the same file ``sklearn.datasets.load_digits`` reads)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset comes with scikit-learn: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read scikit-learn's digits file {path}: {e}") from None
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def small_counts(key: str, root: Optional[os.PathLike] = None, dirs: Sequence[str] = FASHION_DIRS) -> dict[str, int]:
    """Images per split of a small dataset as its loader splits them, read without torch: label files
    whole, image files by header and recorded length (a truncated or corrupt file is a DataError
    naming it)."""
    if key == "fashion-mnist":
        d = find_fashion_dir(root, dirs)
        n = {}
        for split, cond in (("train", lambda y: y < TRAIN_CLASSES), ("test", lambda y: y >= TRAIN_CLASSES)):
            prefix = "train" if split == "train" else "test"
            labels = read_idx(fashion_file(d, f"{prefix}_labels"))
            shape = idx_shape(fashion_file(d, f"{prefix}_images"))
            if shape[0] != labels.shape[0]:
                raise DataError(f"{fashion_file(d, f'{prefix}_images')}: {shape[0]} images for {labels.shape[0]} labels")
            n[split] = int(cond(labels).sum())
        return n
    if key == "digits":
        _, y = digits_table()
        return {"train": int((y < TRAIN_CLASSES).sum()), "test": int((y >= TRAIN_CLASSES).sum())}
    raise DataError(f"{key}: no data files to count")
