"""The fingerprint of a run's data, and the reference data it is compared with.

Every training job records at start which data it saw: per split the split file's name and sha256,
the number of images and of classes, and the ``val_classes`` rule when one is set (written to
``fingerprint.json`` in the run folder and carried by the ``start`` event). A number compared with a
published one is only comparable when this matches the reference split (``fingerprint_deviations``).
Reference counts: reference-implementation.md §4.1-4.2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # computing a fingerprint needs numpy; reading one (compare) does not
    import numpy as np

from ctxsim.errors import DataError

FINGERPRINT_NAME = "fingerprint.json"
FINGERPRINT_VERSION = 1

# dataset -> split -> (images, classes) of the reference split files (reference-implementation.md
# §4.1-4.2); None: not known exactly (iNat's train images are ~50 per class of an unseeded split).
REFERENCE_COUNTS: dict[str, dict[str, tuple[Optional[int], int]]] = {
    "cub": {"train": (5864, 100), "test": (5924, 100)},
    "cars": {"train": (8054, 98), "test": (8131, 98)},
    "sop": {"train": (59551, 11318), "test": (60502, 11316)},
    "inat": {"train": (None, 5003), "test": (249850, 4997)},
    "inshop": {"train": (25882, 3997), "query": (14218, 3985), "gallery": (12612, 3985)},
}
# sha256 prefixes of the reference split files (§4.2); SOP's ship inside its archive and iNat's are
# downloaded, so only their counts are checked.
REFERENCE_SHA256_PREFIX: dict[str, dict[str, str]] = {
    "cub": {"train": "5926ccd3", "test": "10d04e1a"},
    "cars": {"train": "97065ab2", "test": "6e037160"},
    "inshop": {"train": "9813c70d", "query": "a74c06a1", "gallery": "4dd78963"},
}


def _labels(ds) -> Optional[np.ndarray]:
    import numpy as np

    for attr in ("labels", "targets"):
        v = getattr(ds, attr, None)
        if v is not None:
            return np.asarray(v.cpu() if hasattr(v, "cpu") else v)
    tensors = getattr(ds, "tensors", None)
    if tensors is not None and len(tensors) > 1:
        return np.asarray(tensors[1])
    return None


def _split(ds, labels=None) -> dict[str, Any]:
    import numpy as np

    lab = _labels(ds) if labels is None else np.asarray(labels)
    return {"images": int(len(ds)), "classes": int(len(np.unique(lab))) if lab is not None else None,
            "file": None, "sha256": None}


def data_fingerprint(data, dataset: str, val_classes: Any = None) -> dict[str, Any]:
    """The fingerprint of a DataBundle built for ``dataset``: per split its images, classes, and the
    split file's name and sha256 (benchmarks only), plus the ``val_classes`` rule (None if unset) and,
    for data built on the user's machine (icons), its ``source``: what it was built from, with a digest."""
    splits: dict[str, dict[str, Any]] = {"train": _split(data.train, data.train_labels)}
    if getattr(data, "gallery", None) is not None:
        splits["query"] = _split(data.query)
        splits["gallery"] = _split(data.gallery)
    else:
        splits["test"] = _split(data.query)
    if dataset in REFERENCE_COUNTS and data.root is not None:
        from ctxsim.data.common import sha256_file
        from ctxsim.data.datasets import split_file

        for name, entry in splits.items():
            try:
                path = split_file(dataset, Path(data.root), name)
            except (DataError, KeyError, OSError):  # a fingerprint never fails a run: no file, no hash
                continue
            entry["file"] = path.name
            entry["sha256"] = sha256_file(path)
    source = (getattr(data, "info", None) or {}).get("source")
    if source is not None:  # data built on this machine (icons: theme packages and split hashes)
        out_source = {"source": source}
    else:
        out_source = {}
    if getattr(data, "val", None) is not None:  # the held-out training classes (ctxsim.data.val_split)
        from ctxsim.data.val_split import describe_split

        splits["val"] = {**_split(data.val.query), **(describe_split(data) or {})}
    return {"version": FINGERPRINT_VERSION, "dataset": dataset, "splits": splits, "val_classes": val_classes,
            **out_source}


def fingerprint_deviations(fp: Optional[dict[str, Any]]) -> list[str]:
    """How a fingerprint differs from the reference split of its dataset, one short string each
    (e.g. ``"train images 40≠5864"``); empty when it matches."""
    if not fp:
        return ["no data fingerprint recorded"]
    dataset = fp.get("dataset")
    ref = REFERENCE_COUNTS.get(dataset)
    if ref is None:
        return [f"dataset {dataset} has no reference split"]
    out = []
    splits = fp.get("splits") or {}
    for name, (images, classes) in ref.items():
        got = splits.get(name)
        if got is None:
            out.append(f"{name} split missing")
            continue
        if images is not None and got.get("images") != images:
            out.append(f"{name} images {got.get('images')}≠{images}")
        if got.get("classes") != classes:
            out.append(f"{name} classes {got.get('classes')}≠{classes}")
        prefix = REFERENCE_SHA256_PREFIX.get(dataset, {}).get(name)
        if prefix is not None and not str(got.get("sha256") or "").startswith(prefix):
            out.append(f"{name} split file sha256 {str(got.get('sha256'))[:8]}≠{prefix}")
    if fp.get("val_classes") not in (None, 0, 0.0):
        out.append(f"val_classes {fp['val_classes']} (classes held out of train)")
    return out


def fingerprint_matches_reference(fp: Optional[dict[str, Any]]) -> bool:
    """True when the fingerprint's counts (and known split-file hashes) are the reference split's."""
    return not fingerprint_deviations(fp)
