"""fashion-mnist and digits load real data class-disjointly; synthetic is deterministic."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require

from ctxsim.data import build_batch_sampler, build_data
from ctxsim.data.small import FASHION_DIRS, find_fashion_dir
from ctxsim.errors import ConfigError, DataError

torch.set_num_threads(1)


def test_digits_real_class_disjoint():
    b = build_data("digits")
    # scikit-learn's digits: 1797 images; classes 0-4 have 901, classes 5-9 have 896
    assert (len(b.train), len(b.query)) == (901, 896)
    assert b.num_classes == 5 and set(b.train_labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(b.query.labels.tolist()) == {5, 6, 7, 8, 9}
    assert b.in_channels == 1 and b.image_size == 8 and b.gallery is None
    x, y = b.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    from sklearn.datasets import load_digits

    raw = load_digits()
    # eval images are the real pixels (0..16 scaled to 0..255, then normalised)
    q, _ = b.query[0]
    first5 = raw.images[raw.target >= 5][0]
    back = q * b.query.transform._inv_std.reciprocal() + b.query.transform._mean
    assert torch.allclose(back[0], torch.from_numpy(np.rint(first5 * 255 / 16)).float(), atol=1e-3)
    s = build_batch_sampler("m_per_class", b.train_labels, 20, 4)
    assert all(len(set(b.train_labels[i].tolist() for i in batch)) == 5 for batch in s)
    up = build_data("digits", image_size=32)
    assert up.train[0][0].shape == (1, 32, 32) and up.image_size == 32


@pytest.mark.slow
def test_fashion_mnist_real_files():
    present = any((Path(d) / "train-images-idx3-ubyte.gz").is_file() for d in FASHION_DIRS)
    require(present, "fashion-mnist files missing (apt-get install dataset-fashion-mnist)")
    b = build_data("fashion-mnist")
    assert (len(b.train), len(b.query)) == (30000, 5000)
    assert set(b.train_labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(b.query.labels.tolist()) == {5, 6, 7, 8, 9}
    assert np.bincount(b.query.labels)[5:].tolist() == [1000] * 5
    assert b.in_channels == 1 and b.image_size == 28
    x, _ = b.train[0]
    assert x.shape == (1, 28, 28) and abs(float(x.mean())) < 3


def _idx(path: Path, arr: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


def test_fashion_mnist_from_root_and_missing_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (40, 28, 28), dtype=np.uint8))
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", (np.arange(40) % 10).astype(np.uint8))
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28), dtype=np.uint8))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    b = build_data("fashion-mnist", root=tmp_path)
    assert (len(b.train), len(b.query)) == (20, 10)
    monkeypatch.setattr("ctxsim.data.small.FASHION_DIRS", (str(tmp_path / "absent"),))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_dir(tmp_path / "elsewhere")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x14\x01"))
    with pytest.raises(DataError, match="truncated"):
        build_data("fashion-mnist", root=tmp_path)


def test_synthetic_is_deterministic_and_configurable():
    a = build_data("synthetic", num_classes=5, images_per_class=3, image_size=16, channels=1, test_classes=4, seed=2)
    b = build_data("synthetic", num_classes=5, images_per_class=3, image_size=16, channels=1, test_classes=4, seed=2)
    assert (len(a.train), len(a.query), a.num_classes, a.in_channels) == (15, 12, 5, 1)
    assert torch.equal(a.train.images, b.train.images)
    c = build_data("synthetic", num_classes=5, images_per_class=3, image_size=16, channels=1, test_classes=4, seed=3)
    assert not torch.equal(a.train.images, c.train.images)
    assert set(a.query.labels.tolist()) == {5, 6, 7, 8}
    # class structure: images of one class are closer to each other than to other classes
    x = a.train.images.float().flatten(1)
    d = torch.cdist(x, x)
    same = torch.tensor(a.train_labels)[:, None] == torch.tensor(a.train_labels)[None]
    eye = torch.eye(len(x), dtype=torch.bool)
    assert d[same & ~eye].mean() < d[~same].mean()
    assert a.train[0][0].shape == (1, 16, 16)
    with pytest.raises(ConfigError):
        build_data("synthetic", num_classes=0)
    with pytest.raises(ConfigError, match="unknown dataset"):
        build_data("mnist")
