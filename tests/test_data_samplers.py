"""Batch composition and batches-per-epoch of the reference samplers (reference-implementation §3.1-3.3)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ctxsim.data import build_batch_sampler, default_sampler
from ctxsim.errors import ConfigError


def labels_from_counts(counts):
    return np.repeat(np.arange(len(counts)), counts)


def uneven(n_classes, n_images, seed=0):
    """n_images spread over n_classes with uneven class sizes (like the real datasets)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, n_classes)
    counts = np.maximum(1, np.floor(w / w.sum() * n_images)).astype(int)
    counts[: n_images - counts.sum()] += 1
    assert counts.sum() == n_images
    return labels_from_counts(counts)


def composition(labels, batch):
    return Counter(labels[batch].tolist())


# CUB: 100 train classes, 5,864 images; Cars: 98 classes, 8,054; In-Shop: 3,997 classes, 25,882 (reference-implementation §4)
CUB = uneven(100, 5864)
CARS = uneven(98, 8054, 1)
INSHOP = uneven(3997, 25882, 2)


@pytest.mark.parametrize("labels,bs,expected", [(CUB, 128, 45), (CARS, 64, 126)])
def test_balanced224_counts_and_composition(labels, bs, expected):
    s = build_batch_sampler("balanced224", labels, bs, 4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == expected
    for b in batches:
        c = composition(labels, b)
        assert len(b) == bs and len(c) == bs // 4 and set(c.values()) == {4}
    # without-replacement pools: within one round no image repeats inside a class draw
    assert all(len(set(b)) == len(b) for b in batches)


def test_balanced224_hard_coded_96_gives_clear_errors():
    small = labels_from_counts([6] * 20)
    with pytest.raises(ConfigError, match="at least 96 training classes"):
        build_batch_sampler("balanced224", small, 16, 4)
    with pytest.raises(ConfigError, match="must divide the 96"):
        build_batch_sampler("balanced224", CUB, 40, 4)  # 10 classes per batch does not divide 96
    s = build_batch_sampler("balanced224", small, 16, 4, classes_per_round="auto")
    # 120 // 16 = 7 batches wanted; rounds of 20 classes give 5 batches each: 2 rounds
    assert s.classes_per_round == 20 and len(s) == 10
    for b in s:
        assert set(composition(small, b).values()) == {4}


@pytest.mark.parametrize("labels,tries,num_batches,expected", [
    (CUB, 5, 42, 15),      # 100 // 32 = 3 batches per try, 5 tries
    (CARS, 10, 42, 30),    # 98 // 32 = 3 per try, 10 tries
    (INSHOP, 10, 600, 600),  # 124 per try, capped at 600
])
def test_random256_batches_per_epoch(labels, tries, num_batches, expected):
    s = build_batch_sampler("random256", labels, 128, 4, seed=0, tries=tries, num_batches=num_batches)
    batches = list(s)
    assert len(batches) == expected
    for b in batches:
        c = composition(labels, b)
        assert len(b) == 128 and len(c) == 32 and set(c.values()) == {4}


def test_random256_reuses_one_class_order_across_tries():
    s = build_batch_sampler("random256", CUB, 128, 4, seed=5, tries=5, num_batches=42)
    groups = Counter(frozenset(CUB[b].tolist()) for b in s)
    assert len(groups) == 3 and set(groups.values()) == {5}  # the same 3 class groups, once per try


def test_random256_small_classes_sampled_with_replacement():
    labels = labels_from_counts([2] * 8)
    s = build_batch_sampler("random256", labels, 8, 4, tries=1, num_batches=10)
    for b in s:
        assert set(composition(labels, b).values()) == {4}


def test_hierarchical_inat_576_batches_at_256():
    # iNat train: per super-category ceil(n/2) of the class counts 170/142/.../313, 50 images each
    cls = [170, 142, 153, 1486, 341, 2526, 246, 169, 4271, 183, 313]
    tr = [c - c // 2 for c in cls]
    assert sum(tr) == 5003
    labels = np.repeat(np.arange(5003), 50)
    sup = np.repeat(np.repeat(np.arange(11), tr), 50)
    kind, kw = default_sampler("inat", 256, batch_size=256)
    s = build_batch_sampler(kind, labels, 256, 4, super_labels=sup, seed=0, **kw)
    assert int(s.num_half_batches.sum()) == 1401  # round(n_s/N * 10 * 70 * 2) per super-label
    batches = s.batches()
    assert len(batches) == 576
    for b in batches[:50]:
        assert len(b) == 256 and len(set(sup[b].tolist())) == 2
        halves = [b[:128], b[128:]]
        for h in halves:
            assert len(set(sup[h].tolist())) == 1
            # 32 class draws of 4 (a class may be drawn twice where two permutations meet, as in the reference)
            c = composition(labels, h)
            assert all(v % 4 == 0 for v in c.values()) and sum(c.values()) == 128


def test_hierarchical_half_batch_formula_on_scaled_sop():
    # SOP-shaped: 12 super-labels of unequal size; the half-batch counts follow the reference formula
    rng = np.random.default_rng(0)
    per_super = rng.integers(200, 1200, 12)
    labels, sup, c0 = [], [], 0
    for s, n_cls in enumerate(per_super):
        sizes = rng.integers(2, 12, n_cls)
        for k, m in enumerate(sizes):
            labels += [c0 + k] * int(m)
            sup += [s] * int(m)
        c0 += n_cls
    labels, sup = np.array(labels), np.array(sup)
    s = build_batch_sampler("hierarchical", labels, 128, 4, super_labels=sup, batches_per_super_pair=10,
                            batch_multiplier=66)
    n_s = np.bincount(sup)
    expected = np.round((n_s / len(sup) * 1320).astype(np.float32)).astype(int)
    assert (s.num_half_batches == expected).all() and abs(int(expected.sum()) - 1320) <= 6
    batches = s.batches()
    assert len(batches) <= expected.sum() // 2 and len(batches) >= expected.sum() // 2 - expected.max()
    for b in batches:
        assert len(b) == 128
        assert len(set(sup[b[:64]].tolist())) == 1 and len(set(sup[b[64:]].tolist())) == 1
        assert sup[b[0]] != sup[b[64]]
        assert all(v % 4 == 0 for v in composition(labels, b).values())


def test_hierarchical_224_truncates_to_84480_over_b():
    kind, kw = default_sampler("sop", 224, batch_size=128)
    assert kind == "hierarchical" and kw["max_batches"] == 660
    labels = np.repeat(np.arange(400), 4)
    sup = np.repeat(np.arange(400) % 4, 4)
    s = build_batch_sampler(kind, labels, 128, 4, super_labels=sup, **dict(kw, max_batches=7))
    assert len(s) == 7


def test_m_per_class_and_shuffle():
    s = build_batch_sampler("m_per_class", CUB, 60, 3, seed=1)
    assert len(s) == len(CUB) // 60
    for b in s:
        c = composition(CUB, b)
        assert len(c) == 20 and set(c.values()) == {3}
    sh = build_batch_sampler("shuffle", CUB, 128, 0, seed=1)
    batches = list(sh)
    assert len(batches) == len(CUB) // 128 and all(len(b) == 128 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat)  # a permutation, last partial batch dropped
    assert default_sampler("cub", 224, ipc=0) == ("shuffle", {})


@pytest.mark.parametrize("kind", ["balanced224", "random256", "m_per_class", "shuffle"])
def test_seeded_epochs_and_mid_epoch_resume(kind):
    kw = {"tries": 5} if kind == "random256" else {}
    a = build_batch_sampler(kind, CUB, 128, 4, seed=7, **kw)
    b = build_batch_sampler(kind, CUB, 128, 4, seed=7, **kw)
    assert list(a) == list(b)
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != list(b)  # b is still at epoch 0
    # resume: consume 4 batches of epoch 1, save, restore into a fresh sampler
    c = build_batch_sampler(kind, CUB, 128, 4, seed=7, **kw)
    c.set_epoch(1)
    it = iter(c)
    first = [next(it) for _ in range(4)]
    state = c.state_dict()
    assert state["position"] == 4 and state["epoch"] == 1
    d = build_batch_sampler(kind, CUB, 128, 4, seed=0, **kw)
    d.load_state_dict(state)
    d.set_epoch(1)  # the trainer re-selecting the same epoch keeps the position
    assert first + list(d) == e1
    assert list(d) == e1  # a completed pass starts the epoch over


def test_unknown_kind_and_bad_sizes():
    with pytest.raises(ConfigError, match="unknown sampler"):
        build_batch_sampler("nope", CUB, 128)
    with pytest.raises(ConfigError, match="not a multiple"):
        build_batch_sampler("m_per_class", CUB, 130, 4)
    with pytest.raises(ConfigError, match="super-labels"):
        build_batch_sampler("hierarchical", CUB, 128, 4)
