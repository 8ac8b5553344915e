"""Batch samplers of the reference (reference-implementation §3.1-3.3) plus m-per-class and plain shuffling.

Every sampler is a deterministic function of (seed, epoch): the batches of an epoch are drawn from
``numpy.random.default_rng([seed, epoch])``. ``set_epoch(e)`` selects the epoch; ``state_dict()``
records (seed, epoch, position) where position is the number of batches already handed out in the
epoch, and ``load_state_dict`` makes the next ``iter()`` resume right after them, so a resumed run
replays exactly the same batches. A completed pass resets position to 0.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from ctxsim.errors import ConfigError


class _EpochSampler:
    """Base: subclasses implement ``_batches(rng) -> list of index lists``."""

    kind = "base"

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0):
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ConfigError(f"{self.kind} sampler: labels must be a non-empty 1-D array")
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"{self.kind} sampler: batch_size must be >= 1, got {batch_size}")
        self.seed = int(seed)
        self.epoch = 0
        self.position = 0
        self._cache = None  # (epoch, batches)
        classes, inv = np.unique(self.labels, return_inverse=True)
        self.classes = classes
        order = np.argsort(inv, kind="stable")
        bounds = np.cumsum(np.bincount(inv, minlength=len(classes)))[:-1]
        self.class_indices: List[np.ndarray] = np.split(order, bounds)  # per class, ascending indices

    # -- epoch machinery --------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose batches the next iteration yields (position resets on a change)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def batches(self, epoch: Optional[int] = None) -> List[List[int]]:
        """All batches of an epoch (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == e:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, e])
        out = [[int(i) for i in b] for b in self._batches(rng)]
        self._cache = (e, out)
        return out

    def __iter__(self) -> Iterator[List[int]]:
        batches = self.batches()
        while self.position < len(batches):
            b = batches[self.position]
            self.position += 1
            yield b
        self.position = 0

    def __len__(self) -> int:
        return len(self.batches())

    def state_dict(self) -> Dict:
        return {"kind": self.kind, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Dict) -> None:
        if state.get("kind", self.kind) != self.kind:
            raise ConfigError(f"sampler state is for {state.get('kind')!r}, not {self.kind!r}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state.get("position", 0))
        self._cache = None

    def _batches(self, rng: np.random.Generator) -> List[List[int]]:  # pragma: no cover - abstract
        raise NotImplementedError


def _safe_choice(rng: np.random.Generator, pool: np.ndarray, size: int) -> np.ndarray:
    """Draws without replacement when the pool is large enough, else with replacement (as the reference)."""
    return rng.choice(pool, size=size, replace=len(pool) < size)


def _check_ipc(kind: str, batch_size: int, ipc: int) -> int:
    if ipc < 1:
        raise ConfigError(f"{kind} sampler: samples_per_class must be >= 1 (0 means the 'shuffle' sampler)")
    if batch_size % ipc:
        raise ConfigError(f"{kind} sampler: batch size {batch_size} is not a multiple of samples_per_class {ipc}")
    return batch_size // ipc


class BalancedSampler224(_EpochSampler):
    """224 ``BalancedSampler`` (reference-implementation §3.1): rounds of 96 classes x IPC, cut into batches.

    ``classes_per_round`` is hard-coded to 96 in the reference (which then needs >= 96 classes and
    B/IPC dividing 96); pass another multiple of B/IPC, or "auto" (the largest multiple of B/IPC not
    above min(96, #classes)), to use it on small data.
    """

    kind = "balanced224"

    def __init__(self, labels, batch_size: int, samples_per_class: int = 4, seed: int = 0,
                 classes_per_round: Union[int, str] = 96, max_batches: Optional[int] = None):
        super().__init__(labels, batch_size, seed)
        self.ipc = int(samples_per_class)
        per_batch = _check_ipc(self.kind, self.batch_size, self.ipc)
        n_cls = len(self.classes)
        if classes_per_round == "auto":
            cpr = (min(96, n_cls) // per_batch) * per_batch
            if cpr == 0:
                raise ConfigError(f"{self.kind} sampler: {n_cls} classes cannot fill one batch of {per_batch} classes")
        else:
            cpr = int(classes_per_round)
        if cpr % per_batch:
            raise ConfigError(
                f"{self.kind} sampler: B/IPC = {per_batch} classes per batch must divide the {cpr} classes drawn "
                "per round (the reference hard-codes 96; set classes_per_round to a multiple of B/IPC or 'auto')")
        if n_cls < cpr:
            raise ConfigError(
                f"{self.kind} sampler: needs at least {cpr} training classes per round, the data has {n_cls} "
                "(the reference hard-codes 96; set classes_per_round='auto' for small data)")
        self.classes_per_round = cpr
        self.max_batches = max_batches

    def _batches(self, rng):
        per_batch = self.batch_size // self.ipc
        num_batches = len(self.labels) // self.batch_size
        pools = [rng.permutation(ix) for ix in self.class_indices]
        flat: List[int] = []
        while num_batches > 0:
            chosen = rng.choice(len(self.classes), size=self.classes_per_round, replace=False)
            for c in chosen:
                pool = pools[c]
                if len(pool) < self.ipc:  # refill with all the class's indices
                    pool = rng.permutation(self.class_indices[c])
                if len(pool) < self.ipc:  # a class smaller than IPC: with replacement
                    take, pool = rng.choice(pool, size=self.ipc, replace=True), pool
                else:
                    take, pool = pool[: self.ipc], pool[self.ipc:]
                pools[c] = pool
                flat.extend(take.tolist())
            num_batches -= self.classes_per_round // per_batch
        out = [flat[i:i + self.batch_size] for i in range(0, len(flat) - self.batch_size + 1, self.batch_size)]
        if self.max_batches is not None:
            out = out[: int(self.max_batches)]
        return out


class RandomSampler256(_EpochSampler):
    """256 ``RandomSampler`` (reference-implementation §3.2): one class order, walked ``tries`` times in groups of B/spc.

    Per try ``min(#classes // (B/spc), num_batches)`` batches; stop at ``num_batches``; shuffle the
    batches. CUB gives 15 batches per epoch (tries 5), Cars 30 (tries 10), In-Shop 600 (num_batches 600).
    """

    kind = "random256"

    def __init__(self, labels, batch_size: int, samples_per_class: int = 4, seed: int = 0,
                 num_batches: int = 42, tries: int = 10):
        super().__init__(labels, batch_size, seed)
        self.spc = int(samples_per_class)
        self.per_batch = _check_ipc(self.kind, self.batch_size, self.spc)
        self.num_batches = int(num_batches)
        self.tries = int(tries)
        if len(self.classes) < self.per_batch:
            raise ConfigError(f"{self.kind} sampler: {len(self.classes)} classes cannot fill a batch of "
                              f"{self.per_batch} classes x {self.spc}")

    def _batches(self, rng):
        order = rng.permutation(len(self.classes))
        per_try = min(len(order) // self.per_batch, self.num_batches)
        batches: List[List[int]] = []
        for _ in range(self.tries):
            for b in range(per_try):
                batch: List[int] = []
                for c in order[b * self.per_batch:(b + 1) * self.per_batch]:
                    batch.extend(_safe_choice(rng, self.class_indices[c], self.spc).tolist())
                batches.append(batch)
                if len(batches) >= self.num_batches:
                    break
            if len(batches) >= self.num_batches:
                break
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]


class HierarchicalSamplerBalanced(_EpochSampler):
    """``HierarchicalSamplerBalanced`` (reference-implementation §3.3): half-batches per super-label, paired round-robin.

    SOP: batches_per_super_pair 10, batch_multiplier 66 (655 batches at B=128); iNat: 70 (576 at B=256).
    """

    kind = "hierarchical"

    def __init__(self, labels, batch_size: int, samples_per_class: int = 4, super_labels=None, seed: int = 0,
                 batches_per_super_pair: int = 10, batch_multiplier: int = 66, max_batches: Optional[int] = None):
        super().__init__(labels, batch_size, seed)
        if super_labels is None:
            raise ConfigError("hierarchical sampler: needs super-labels (SOP and iNat have them)")
        sup = np.asarray(super_labels, dtype=np.int64)
        if sup.shape != self.labels.shape:
            raise ConfigError("hierarchical sampler: super_labels and labels differ in length")
        self.spc = int(samples_per_class)
        if self.batch_size % 2:
            raise ConfigError(f"hierarchical sampler: batch size {batch_size} must be even (two super-labels)")
        _check_ipc(self.kind, self.batch_size // 2, self.spc)
        self.supers, sup_idx = np.unique(sup, return_inverse=True)  # contiguous 0..S-1 as the code assumes
        if len(self.supers) < 2:
            raise ConfigError("hierarchical sampler: needs at least two super-labels")
        # per super-label: class -> indices (classes in ascending order)
        self.super_classes: List[List[np.ndarray]] = []
        for s in range(len(self.supers)):
            m = sup_idx == s
            idx = np.flatnonzero(m)
            cls = self.labels[idx]
            self.super_classes.append([idx[cls == c] for c in np.unique(cls)])
        counts = np.bincount(sup_idx, minlength=len(self.supers)).astype(np.float32)
        # round(n_s / N * bpsp * mult * 2), float32 and half-to-even like torch's .round()
        hb = counts / np.float32(len(sup)) * np.float32(batches_per_super_pair) * np.float32(batch_multiplier) * np.float32(2)
        self.num_half_batches = np.round(hb.astype(np.float32)).astype(np.int64)
        self.max_batches = max_batches

    def _batches(self, rng):
        h = self.batch_size // 2
        per_half = h // self.spc
        halves: List[List[List[int]]] = []
        for s, cls_lists in enumerate(self.super_classes):
            need = int(self.num_half_batches[s]) * per_half
            ncls = len(cls_lists)
            sampled: List[int] = []
            while need > ncls:
                sampled.extend(rng.permutation(ncls).tolist())
                need -= ncls
            if need > 0:
                sampled.extend(rng.permutation(ncls)[:need].tolist())
            hs, sub = [], []
            for c in sampled:
                sub.extend(_safe_choice(rng, cls_lists[c], self.spc).tolist())
                if len(sub) >= h:
                    hs.append(sub)
                    sub = []
            halves.append(hs)
        # round-robin pairing, popping from the end (reference-implementation §3.3)
        batches: List[List[int]] = []
        S = len(halves)
        s1 = 0
        while sum(len(x) > 0 for x in halves) > 1:
            for s2 in range(S):
                if s2 == s1:
                    continue
                if halves[s1] and halves[s2]:
                    a = halves[s1].pop()
                    b = halves[s2].pop()
                    batches.append(a + b)
                elif not halves[s1]:
                    break
            s1 = (s1 + 1) % S
        perm = rng.permutation(len(batches))
        out = [batches[i] for i in perm]
        if self.max_batches is not None:
            out = out[: int(self.max_batches)]
        return out


class MPerClassSampler(_EpochSampler):
    """Standard m-per-class batches: B/m distinct classes x m images, len(labels)//B batches per epoch."""

    kind = "m_per_class"

    def __init__(self, labels, batch_size: int, samples_per_class: int = 4, seed: int = 0,
                 num_batches: Optional[int] = None):
        super().__init__(labels, batch_size, seed)
        self.m = int(samples_per_class)
        self.per_batch = _check_ipc(self.kind, self.batch_size, self.m)
        if len(self.classes) < self.per_batch:
            raise ConfigError(f"{self.kind} sampler: {len(self.classes)} classes cannot fill a batch of "
                              f"{self.per_batch} classes x {self.m}")
        self.num_batches = max(1, len(self.labels) // self.batch_size) if num_batches is None else int(num_batches)

    def _batches(self, rng):
        out = []
        for _ in range(self.num_batches):
            chosen = rng.choice(len(self.classes), size=self.per_batch, replace=False)
            batch: List[int] = []
            for c in chosen:
                batch.extend(_safe_choice(rng, self.class_indices[c], self.m).tolist())
            out.append(batch)
        return out


class ShuffleSampler(_EpochSampler):
    """IPC = 0: a random permutation cut into batches, last partial batch dropped (reference-implementation §2.3)."""

    kind = "shuffle"

    def __init__(self, labels, batch_size: int, seed: int = 0, drop_last: bool = True):
        super().__init__(labels, batch_size, seed)
        self.drop_last = bool(drop_last)
        if self.drop_last and len(self.labels) < self.batch_size:
            raise ConfigError(f"shuffle sampler: {len(self.labels)} images cannot fill one batch of {batch_size}")

    def _batches(self, rng):
        perm = rng.permutation(len(self.labels))
        n = len(perm)
        stop = n - n % self.batch_size if self.drop_last else n
        return [perm[i:i + self.batch_size].tolist() for i in range(0, stop, self.batch_size)]


SAMPLERS = {
    "balanced224": BalancedSampler224,
    "random256": RandomSampler256,
    "hierarchical": HierarchicalSamplerBalanced,
    "m_per_class": MPerClassSampler,
    "shuffle": ShuffleSampler,
}


def build_batch_sampler(kind: str, labels, batch_size: int, samples_per_class: int = 4, super_labels=None,
                        seed: int = 0, **kw) -> _EpochSampler:
    """A seedable batch sampler by name (see SAMPLERS); extra keywords go to the sampler class."""
    if kind not in SAMPLERS:
        raise ConfigError(f"unknown sampler {kind!r}; choose from {', '.join(SAMPLERS)}")
    cls = SAMPLERS[kind]
    try:
        if kind == "shuffle":
            return cls(labels, batch_size, seed=seed, **kw)
        if kind == "hierarchical":
            return cls(labels, batch_size, samples_per_class, super_labels=super_labels, seed=seed, **kw)
        return cls(labels, batch_size, samples_per_class, seed=seed, **kw)
    except TypeError as e:
        raise ConfigError(f"{kind} sampler: {e}") from None
