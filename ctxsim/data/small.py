"""Small real datasets (fashion-mnist, digits, icons) and generated images (synthetic), all class-disjoint.

Protocol (as CUB/Cars): train on the first half of the classes, retrieve among the other half
(query == gallery, self excluded). Images stay in memory as uint8 tensors; ``image_size=`` resizes
them (e.g. for a ResNet), otherwise the native size is used and ``resolution`` is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ctxsim.data.common import DataBundle
from ctxsim.data.idx import FASHION_DIRS, FASHION_FILES, TRAIN_CLASSES, digits_table, fashion_file, read_idx  # noqa: F401  (FASHION_*: importable from here)
from ctxsim.data.idx import find_fashion_dir as _find_fashion_dir
from ctxsim.data.transforms import TensorAugment
from ctxsim.errors import ConfigError


class TensorImageDataset(Dataset):
    """uint8 images [N, C, H, W] in memory + labels; yields (augmented float tensor, label)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform, name: str = ""):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor [N, C, H, W]")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_ids = self.labels
        self.super_labels = None
        self.transform = transform
        self.name = name
        self.bad_image_count = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[int(index)]), int(self.labels[int(index)])


def find_fashion_dir(root: Optional[os.PathLike] = None) -> Path:
    """The directory holding the four fashion-mnist files (root, root/fashion-mnist, then Debian's)."""
    return _find_fashion_dir(root, FASHION_DIRS)


def _bundle(name, tr_x, tr_y, te_x, te_y, mean, std, pad, flip, image_size, ks, **augment) -> DataBundle:
    tr_y = np.asarray(tr_y, dtype=np.int64)
    te_y = np.asarray(te_y, dtype=np.int64)
    train_labels = tr_y - tr_y.min() if len(tr_y) else tr_y
    train_tf = TensorAugment(mean, std, pad=pad, flip=flip, out_size=image_size, **augment)
    eval_tf = TensorAugment(mean, std, out_size=image_size)
    train = TensorImageDataset(tr_x, train_labels, train_tf, name=f"{name}/train")
    train.class_ids = tr_y
    query = TensorImageDataset(te_x, te_y, eval_tf, name=f"{name}/test")
    return DataBundle(
        name=name, train=train, query=query, gallery=None, num_classes=int(len(np.unique(train_labels))),
        train_labels=train_labels, train_super_labels=None, ks=ks,
        image_size=int(image_size or tr_x.shape[-1]), in_channels=int(tr_x.shape[1]),
    )


def build_fashion_mnist(root=None, image_size: Optional[int] = None, augment: bool = True, **_ignored) -> DataBundle:
    """Train: the 30,000 train-file images of classes 0-4; test: the 5,000 t10k images of classes 5-9."""
    d = find_fashion_dir(root)
    tr_x = read_idx(fashion_file(d, "train_images"))
    tr_y = read_idx(fashion_file(d, "train_labels")).astype(np.int64)
    te_x = read_idx(fashion_file(d, "test_images"))
    te_y = read_idx(fashion_file(d, "test_labels")).astype(np.int64)
    mtr, mte = tr_y < TRAIN_CLASSES, te_y >= TRAIN_CLASSES
    x_tr = torch.from_numpy(tr_x[mtr].copy()).unsqueeze(1)
    x_te = torch.from_numpy(te_x[mte].copy()).unsqueeze(1)
    # mean/std of the fashion-mnist training images (computed on the training classes at load time)
    m = float(x_tr.float().mean() / 255.0)
    s = float(x_tr.float().std() / 255.0)
    return _bundle("fashion-mnist", x_tr, tr_y[mtr], x_te, te_y[mte], (m,), (s,), pad=2 if augment else 0,
                   flip=augment, image_size=image_size, ks=(1, 2, 4, 8))


def build_digits(image_size: Optional[int] = None, augment: bool = True, **_ignored) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (no download): train classes 0-4, retrieval on 5-9."""
    images, y = digits_table()
    x = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    mtr = y < TRAIN_CLASSES
    x_tr = torch.from_numpy(x[mtr]).unsqueeze(1)
    x_te = torch.from_numpy(x[~mtr]).unsqueeze(1)
    m = float(x_tr.float().mean() / 255.0)
    s = float(x_tr.float().std() / 255.0)
    return _bundle("digits", x_tr, y[mtr], x_te, y[~mtr], (m,), (s,), pad=1 if augment else 0, flip=False,
                   image_size=image_size, ks=(1, 2, 4, 8))


def build_icons(root=None, image_size: int = 32, augment: bool = True, pad: int = 2, **_ignored) -> DataBundle:
    """The prepared icons set (``ctxsim data prepare icons``; ctxsim.data.icons): train on the train.txt
    classes, retrieve among the test.txt classes. RGB at ``image_size`` px (stored at 48). Augmentation:
    a shift of up to ``pad`` px with edge padding (a grayscale option lost on validation classes:
    docs/icons.md); never a flip (a mirrored "go-next" is "go-previous")."""
    from ctxsim.data.icons import load_icons, source_of

    x_tr, y_tr, x_te, y_te, manifest, ddir = load_icons(root, image_size=int(image_size))
    x_tr, x_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    xf = x_tr.float() / 255.0
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in xf.std(dim=(0, 2, 3)))
    b = _bundle("icons", x_tr, y_tr, x_te, y_te, mean, std, pad=int(pad) if augment else 0, flip=False,
                image_size=None, ks=(1, 2, 4, 8), pad_mode="replicate")
    b.root = str(ddir)
    b.info = {"source": source_of(manifest)}
    return b


def synthetic_images(num_classes: int, per_class: int, size: int, channels: int, seed: int,
                     class_offset: int = 0, noise: float = 0.35) -> tuple:
    """Deterministic class-structured images: a smooth per-class pattern plus per-image noise and shift."""
    rng = np.random.default_rng([int(seed), 7919, int(class_offset)])
    n = num_classes * per_class
    coarse = max(2, size // 8)
    protos = rng.random((num_classes, channels, coarse, coarse), dtype=np.float32)
    protos_t = torch.nn.functional.interpolate(torch.from_numpy(protos), size=(size, size), mode="bilinear",
                                               align_corners=False)
    labels = np.repeat(np.arange(num_classes), per_class)
    imgs = protos_t[labels]
    shifts = rng.integers(-max(1, size // 16), max(1, size // 16) + 1, size=(n, 2))
    out = torch.empty_like(imgs)
    for i in range(n):
        out[i] = torch.roll(imgs[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
    out = out + noise * torch.from_numpy(rng.standard_normal(out.shape, dtype=np.float32))
    out = (out.clamp(0, 1) * 255).round().to(torch.uint8)
    return out, labels.astype(np.int64) + class_offset


def build_synthetic(num_classes: int = 8, images_per_class: int = 8, image_size: int = 32, channels: int = 3,
                    test_classes: Optional[int] = None, test_images_per_class: Optional[int] = None,
                    seed: int = 0, noise: float = 0.35, augment: bool = False, out_size: Optional[int] = None,
                    **_ignored) -> DataBundle:
    """Generated images: ``num_classes`` train classes and ``test_classes`` disjoint test classes."""
    for k, v in (("num_classes", num_classes), ("images_per_class", images_per_class), ("image_size", image_size),
                 ("channels", channels)):
        if int(v) < 1:
            raise ConfigError(f"synthetic: {k} must be >= 1, got {v}")
    tc = num_classes if test_classes is None else int(test_classes)
    tp = images_per_class if test_images_per_class is None else int(test_images_per_class)
    x_tr, y_tr = synthetic_images(num_classes, images_per_class, image_size, channels, seed, 0, noise)
    x_te, y_te = synthetic_images(tc, tp, image_size, channels, seed, num_classes, noise)
    mean, std = (0.5,) * channels, (0.25,) * channels
    return _bundle("synthetic", x_tr, y_tr, x_te, y_te, mean, std, pad=2 if augment else 0, flip=augment,
                   image_size=out_size, ks=(1, 2, 4, 8))
