"""The five benchmarks load from generated trees in the exact reference layouts (reference-implementation §4.1)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from ctxsim.data import build_batch_sampler, build_data, default_sampler
from ctxsim.data.fake import corrupt_file, make_fake_benchmark
from ctxsim.errors import DataError

torch.set_num_threads(1)

NAMES = ["cub", "cars", "sop", "inat", "inshop"]


@pytest.mark.parametrize("name", NAMES)
def test_layout_loads_with_reference_counts(tmp_path, name):
    info = make_fake_benchmark(name, tmp_path, train_classes=8, test_classes=4, per_class=4, supers=2)
    b = build_data(name, root=tmp_path, resolution=256)
    assert b.name == name
    assert len(b.train) == info["images"]["train"]
    assert b.num_classes == info["classes"]["train"] == len(np.unique(b.train_labels))
    # training labels are 0..C-1, the split file's ids are kept
    assert sorted(set(b.train_labels.tolist())) == list(range(8))
    assert len(set(b.train.class_ids.tolist())) == 8
    if name == "inshop":
        assert len(b.query) == info["images"]["query"] and len(b.gallery) == info["images"]["gallery"]
        assert set(b.query.labels.tolist()) == set(b.gallery.labels.tolist())
        assert not set(b.query.labels.tolist()) & set(b.train.class_ids.tolist())
        assert b.ks == (1, 10, 20, 30, 40, 50)
    else:
        assert b.gallery is None
        assert len(b.query) == info["images"]["test"]
        assert len(set(b.query.labels.tolist())) == info["classes"]["test"]
        # class-disjoint protocol: no test class id is a train class id
        assert not set(b.query.class_ids.tolist()) & set(b.train.class_ids.tolist())
    if name == "sop":  # label = class_id - 1, super = super_class_id - 1
        assert b.train.class_ids.min() == 0 and b.query.labels.min() == 8
        assert b.train_super_labels is not None and set(b.train_super_labels.tolist()) == {0, 1}
    elif name == "inat":
        assert b.train_super_labels is not None and set(b.train_super_labels.tolist()) == {0, 1}
        assert b.ks == (1, 4, 16, 32)
    else:
        assert b.train_super_labels is None
    if name == "cub":  # class ids as in the split file (1..8 train, 9..12 test)
        assert b.train.class_ids.min() == 1 and b.query.labels.min() == 9
    size = 224 if name == "inat" else 256
    assert b.image_size == size and b.in_channels == 3
    x, y = b.train[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and y == int(b.train_labels[0])
    q, _ = b.query[0]
    assert q.shape == (3, size, size)
    b224 = build_data(name, root=tmp_path, resolution=224)
    assert b224.train[1][0].shape == (3, 224, 224) and b224.query[1][0].shape == (3, 224, 224)


@pytest.mark.parametrize("name", NAMES)
def test_reference_sampler_composition_on_layout(tmp_path, name):
    """Each layout feeds its reference sampler; batches are classes x 4 images (scaled batch sizes)."""
    make_fake_benchmark(name, tmp_path, train_classes=12, test_classes=2, per_class=5, supers=2)
    b = build_data(name, root=tmp_path)
    kind, kw = default_sampler(name, 256, batch_size=16)
    if kind == "random256":
        kw = dict(kw, tries=2)
    s = build_batch_sampler(kind, b.train_labels, 16, 4, super_labels=b.train_super_labels, seed=1, **kw)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for batch in batches:
        assert len(batch) == 16
        counts = Counter(b.train_labels[batch].tolist())
        assert len(counts) == 4 and set(counts.values()) == {4}
        if kind == "hierarchical":
            assert len(set(b.train_super_labels[batch].tolist())) == 2
    if kind == "random256":  # 12 classes // 4 per batch = 3 batches per try, 2 tries
        assert len(batches) == 6


def test_root_may_be_the_dataset_dir_and_errors_are_clear(tmp_path):
    make_fake_benchmark("cub", tmp_path, per_class=2)
    b = build_data("cub", root=tmp_path / "CUB_200_2011")
    assert len(b.train) == 8
    with pytest.raises(DataError, match="does not exist"):
        build_data("cub", root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="CUB_200_2011 does not exist"):
        build_data("cub", root=tmp_path / "empty")


def test_sop_without_ebay_files_names_them(tmp_path):
    make_fake_benchmark("sop", tmp_path, per_class=2)
    (tmp_path / "Stanford_Online_Products" / "Ebay_train.txt").unlink()
    with pytest.raises(DataError, match="Ebay_train.txt is missing"):
        build_data("sop", root=tmp_path)


def test_shipped_split_files_are_used_when_absent(tmp_path):
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    b = build_data("cub", root=tmp_path)
    assert len(b.train) == 5864 and len(b.query) == 5924
    assert b.num_classes == 100 and len(set(b.query.labels.tolist())) == 100
    assert b.query.labels.min() == 101
    with pytest.raises(DataError, match=r"Black_Footed_Albatross_0046_18\.jpg"):
        b.train[0]
    (tmp_path / "inshop" / "img").mkdir(parents=True)
    i = build_data("inshop", root=tmp_path)
    assert (len(i.train), len(i.query), len(i.gallery)) == (25882, 14218, 12612)
    assert i.num_classes == 3997
    (tmp_path / "car196" / "car_ims").mkdir(parents=True)
    c = build_data("cars", root=tmp_path)
    assert (len(c.train), len(c.query), c.num_classes) == (8054, 8131, 98)


def test_corrupt_image_fails_with_name_or_is_skipped_and_counted(tmp_path):
    info = make_fake_benchmark("cub", tmp_path, train_classes=2, test_classes=1, per_class=3)
    b = build_data("cub", root=tmp_path)
    bad = b.train.path(1)
    corrupt_file(bad)
    with pytest.raises(DataError, match="Bird_1_0001_2.jpg"):
        b.train[1]
    skip = build_data("cub", root=tmp_path, skip_bad_images=True)
    x, y = skip.train[1]
    assert x.shape == (3, 256, 256) and y == skip.train.labels[1]  # substituted by the same class
    assert skip.train.bad_image_count == 1
    # the count is shared with DataLoader worker processes
    loader = torch.utils.data.DataLoader(skip.train, batch_size=3, num_workers=1)
    n = sum(len(yb) for _, yb in loader)
    assert n == len(skip.train) and skip.train.bad_image_count == 2
    assert info["images"]["train"] == 6
