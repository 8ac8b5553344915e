"""The five retrieval benchmarks in the reference on-disk layouts (reference-implementation §4.1).

``root`` is the parent data directory, as ``main.py --root`` (e.g. ``<root>/CUB_200_2011/images/...``);
a root that already is the dataset directory (contains ``images/`` for CUB, ``car_ims/`` for Cars,
...) is accepted too. Split files are read from the dataset directory and, for CUB, Cars and In-Shop,
fall back to the copies shipped in the package (``ctxsim/data/splits``).

Training labels are mapped to 0..C-1 (sorted class ids); test/query/gallery labels keep the split
file's ids (SOP: class_id - 1). ``dataset.class_ids`` always holds the split file's ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from ctxsim.data.common import (
    DataBundle,
    ImageListDataset,
    check_image,
    contiguous,
    read_comma_split,
    read_space_split,
    shipped_split,
)
from ctxsim.data.transforms import FastImagePipeline, recipe_transforms
from ctxsim.errors import DataError


@dataclass(frozen=True)
class Layout:
    """Where a benchmark lives under the data root and which split files describe it."""

    name: str
    subdir: str  # directory under the data root
    marker: str  # a sub-directory that identifies the dataset directory itself
    splits: Dict[str, str]  # split -> file name inside subdir
    fmt: str  # "space" | "comma"
    image_prefix: str = ""  # directory the split paths are relative to, inside subdir
    shipped: bool = False  # split files shipped in the package
    ks: Tuple[int, ...] = (1, 2, 4, 8)
    label_offset: int = 0  # added to split-file class ids for labels (SOP: -1)
    super_offset: int = 0
    use_super: bool = False
    # reference sizes (images per split, classes per split), reference-implementation §4.1-4.2
    expected_images: Dict[str, int] = None
    expected_classes: Dict[str, int] = None


LAYOUTS: Dict[str, Layout] = {
    "cub": Layout("cub", "CUB_200_2011", "images", {"train": "cub200_train.txt", "test": "cub200_test.txt"}, "space",
                  shipped=True, expected_images={"train": 5864, "test": 5924},
                  expected_classes={"train": 100, "test": 100}),
    "cars": Layout("cars", "car196", "car_ims", {"train": "cars196_train.txt", "test": "cars196_test.txt"}, "space",
                   shipped=True, expected_images={"train": 8054, "test": 8131},
                   expected_classes={"train": 98, "test": 98}),
    "sop": Layout("sop", "Stanford_Online_Products", "bicycle_final", {"train": "Ebay_train.txt", "test": "Ebay_test.txt"},
                  "space", ks=(1, 10, 100, 1000), label_offset=-1, super_offset=-1, use_super=True,
                  expected_images={"train": 59551, "test": 60502},
                  expected_classes={"train": 11318, "test": 11316}),
    "inat": Layout("inat", "train_mini_resized", "", {"train": "iNaturalist_train.txt", "test": "iNaturalist_test.txt"},
                   "comma", ks=(1, 4, 16, 32), use_super=True,
                   expected_images={"test": 249850}, expected_classes={"train": 5003, "test": 4997}),
    "inshop": Layout("inshop", "inshop", "img",
                     {"train": "inshop_train.txt", "query": "inshop_query.txt", "gallery": "inshop_gallery.txt"},
                     "space", shipped=True, ks=(1, 10, 20, 30, 40, 50),
                     expected_images={"train": 25882, "query": 14218, "gallery": 12612},
                     expected_classes={"train": 3997, "query": 3985, "gallery": 3985}),
}


def default_root() -> str:
    """The data root when none is given: $CTXSIM_DATA, else ./data."""
    return os.environ.get("CTXSIM_DATA", "data")


def dataset_dir(name: str, root: Optional[os.PathLike]) -> Path:
    """The dataset directory (``<root>/<subdir>``, or ``root`` itself if it is the dataset dir)."""
    lay = LAYOUTS[name]
    r = Path(root if root is not None else default_root()).expanduser()
    if not r.is_dir():
        raise DataError(f"data root {r} does not exist (run: ctxsim data prepare {name} --root DIR)")
    cand = r / lay.subdir
    if cand.is_dir():
        return cand
    if r.name == lay.subdir or (lay.marker and (r / lay.marker).is_dir()) or any(
        (r / f).is_file() for f in lay.splits.values()
    ):
        return r
    raise DataError(f"{name}: {cand} does not exist (run: ctxsim data prepare {name} --root {r})")


def split_file(name: str, ddir: Path, split: str) -> Path:
    """The split file to use: the one in the dataset directory, else the shipped copy."""
    lay = LAYOUTS[name]
    fname = lay.splits[split]
    p = ddir / fname
    if p.is_file():
        return p
    if lay.shipped and shipped_split(fname).is_file():
        return shipped_split(fname)
    hint = {"sop": "it ships inside Stanford_Online_Products.zip",
            "inat": "run: ctxsim data prepare inat (it fetches the reference split files)"}.get(name, "")
    raise DataError(f"{name}: split file {p} is missing" + (f" ({hint})" if hint else ""))


def read_split(name: str, ddir: Path, split: str):
    """(relative paths, class ids, super labels or None) of one split, labels as the reference uses them."""
    lay = LAYOUTS[name]
    path = split_file(name, ddir, split)
    if lay.fmt == "comma":
        paths, cls, sup = read_comma_split(path)
    else:
        paths, cls, sup = read_space_split(path)
    cls = cls + lay.label_offset
    sup = (sup + lay.super_offset) if lay.use_super else None
    if lay.image_prefix:
        paths = [f"{lay.image_prefix}/{p}" for p in paths]
    return paths, cls, sup


def quick_check(name: str, root=None, sample: int = 16, decode: bool = True):
    """A fast look at a benchmark before a run is queued: the data root, every split file, and
    ``sample`` images per split spread over the list (present, and decoded when ``decode``; the full
    check is ``ctxsim data verify``). Returns the train split's (labels, super-labels) as
    ``build_benchmark`` makes them; DataError (one line) on the first problem."""
    lay = LAYOUTS[name]
    ddir = dataset_dir(name, root)
    train = None
    for split in lay.splits:
        paths, cls, sup = read_split(name, ddir, split)
        if not paths:
            raise DataError(f"{name}: the {split} split ({split_file(name, ddir, split)}) lists no images")
        step = max(1, len(paths) // max(1, sample))
        for rel in paths[::step][:sample]:
            f = ddir / rel
            problem = "missing" if not f.is_file() else (check_image(str(f)) if decode else None)
            if problem:
                raise DataError(f"{name}: image {f} of the {split} split is {problem if problem == 'missing' else 'unreadable: ' + problem}"
                                f" (check the data with: ctxsim data verify {name} --root {root or default_root()})")
        if split == "train":
            train = (cls, sup)
    assert train is not None
    labels, _ = contiguous(train[0])
    return labels, (contiguous(train[1])[0] if train[1] is not None else None)


def build_benchmark(name: str, root=None, resolution: int = 256, xform_scale: Optional[float] = None,
                    skip_bad_images: bool = False, draft: bool = True, rrc_ratio=None, **_ignored) -> DataBundle:
    """Builds one of cub, cars, sop, inat, inshop with the recipe transforms (reference-implementation §3, §4.1)."""
    lay = LAYOUTS[name]
    ddir = dataset_dir(name, root)
    train_rec, eval_rec = recipe_transforms(name, resolution, xform_scale, rrc_ratio=rrc_ratio)
    train_tf, eval_tf = FastImagePipeline(train_rec, draft=draft), FastImagePipeline(eval_rec, draft=draft)

    paths, cls, sup = read_split(name, ddir, "train")
    if not paths:
        raise DataError(f"{name}: the train split is empty")
    train_labels, _ = contiguous(cls)
    train_sup = None
    if sup is not None:
        train_sup, _ = contiguous(sup)
    train = ImageListDataset(ddir, paths, train_labels, train_tf, class_ids=cls, super_labels=train_sup,
                             skip_bad_images=skip_bad_images, name=f"{name}/train")

    if name == "inshop":
        qp, qc, _ = read_split(name, ddir, "query")
        gp, gc, _ = read_split(name, ddir, "gallery")
        query = ImageListDataset(ddir, qp, qc, eval_tf, skip_bad_images=skip_bad_images, name=f"{name}/query")
        gallery = ImageListDataset(ddir, gp, gc, eval_tf, skip_bad_images=skip_bad_images, name=f"{name}/gallery")
    else:
        tp, tc, tsup = read_split(name, ddir, "test")
        query = ImageListDataset(ddir, tp, tc, eval_tf, super_labels=tsup, skip_bad_images=skip_bad_images,
                                 name=f"{name}/test")
        gallery = None
    return DataBundle(
        name=name, train=train, query=query, gallery=gallery, num_classes=int(train_labels.max()) + 1,
        train_labels=train_labels, train_super_labels=train_sup, ks=lay.ks, image_size=train_rec.size,
        in_channels=3, root=str(ddir),
        info={"train_transform": repr(train_tf), "eval_transform": repr(eval_tf), "resolution": resolution},
    )
