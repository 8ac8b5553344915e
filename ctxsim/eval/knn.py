"""Exact k-nearest-neighbour search by inner product (cosine on L2-normalised embeddings).

Two backends with the same result (reference-implementation §5 evaluates exactly, in chunks, never a full N x N):
* "faiss": IndexFlatIP (a GPU index when faiss sees GPUs and the data is on CUDA);
* "torch": chunked matmul + topk (query rows x the whole gallery per block, at most 256 MiB of
  scores on the CPU, 1 GiB on CUDA); it scores in the embeddings' dtype, so float64 embeddings give
  float64 scores (the metrics' precision="float64", ctxsim.eval.metrics). faiss is float32-only.
  A symmetric variant (upper-triangle blocks only, each serving rows and columns) was measured
  slower on CPU: the column-side topk and the merges cost more than the matmul it saves.

Tie rule: neighbours are ordered by descending score, equal scores by ascending gallery index, and
membership at the k-th position follows the same rule. Both backends enforce it exactly on the
scores they compute (a row whose k-th and (k+1)-th scores are equal is re-resolved), so exact ties
(duplicates, quantised embeddings) give identical results. Scores that differ only by float32
rounding between the two backends' matmul kernels may still order differently.

Self-exclusion (query == gallery) is by index: row i never lists item i, even if duplicates of it
tie with it.

This module is the only place that imports faiss.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

# faiss's loader logs each optional build it cannot load (AVX512, SVE...) with a ModuleNotFoundError
# at INFO: noise in every job log, not a problem; its warnings still come through
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

try:  # the one faiss import site of ctxsim
    import faiss  # type: ignore[import-not-found]

    try:  # lets faiss calls take torch tensors (needed for CUDA tensors on GPU indexes)
        import faiss.contrib.torch_utils  # type: ignore[import-not-found]  # noqa: F401  (registers torch tensor support)
    except Exception:  # pragma: no cover - older faiss builds
        pass
except ImportError:  # pragma: no cover - exercised only where faiss is absent
    faiss = None

BACKENDS = ("auto", "faiss", "torch")
# Byte budget of one block of scores (rows x gallery columns, float32), on the CPU and on CUDA.
DEFAULT_CHUNK_BYTES = 256 * 2**20
CUDA_CHUNK_BYTES = 1024 * 2**20
_FAISS_QUERY_CHUNK = 4096
_FAISS_GPU_MAX_K = 2048
_NEG_INF = float("-inf")


def faiss_available() -> bool:
    """True when faiss can be imported."""
    return faiss is not None


def faiss_gpu_available() -> bool:
    """True when the faiss build has GPU support and sees at least one GPU."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_backend(backend: str, device: torch.device, dim: int | None = None) -> str:
    """auto: torch (chunked matmul + topk) for CUDA tensors; faiss IndexFlatIP on the CPU when faiss
    is installed (equal or faster than torch and lighter on memory in benchmarks/knn.py), torch
    otherwise. `dim` is accepted for future per-width choices and currently unused."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown k-NN backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "faiss" and faiss is None:
        raise ValueError("backend='faiss' needs the faiss package (faiss-gpu or faiss-cpu); use backend='torch'")
    if backend == "auto":
        return "faiss" if (faiss is not None and torch.device(device).type == "cpu") else "torch"
    return backend


# ---------------------------------------------------------------- ordering helpers


def canonical_order(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorts each row by (score desc, index asc); invalid slots (index -1, score -inf) go last."""
    if vals.shape[1] <= 1:
        return vals, idx
    key = torch.where(idx < 0, torch.iinfo(torch.int64).max, idx)
    order = key.argsort(dim=1)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def _pad(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    missing = k - vals.shape[1]
    if missing <= 0:
        return vals, idx
    n = vals.shape[0]
    return (torch.cat([vals, vals.new_full((n, missing), _NEG_INF)], 1),
            torch.cat([idx, idx.new_full((n, missing), -1)], 1))


def _mark_invalid(vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isneginf(vals), torch.full_like(idx, -1), idx)


def topk_exact(scores: torch.Tensor, k: int, col_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of `scores` under the tie rule; -inf entries are excluded (index -1).

    Returns (vals [r, k], idx [r, k]) in canonical order, idx offset by `col_offset`.
    """
    r, m = scores.shape
    if k >= m:
        idx = torch.arange(m, device=scores.device).expand(r, m) + col_offset
        vals, idx = canonical_order(scores, idx)
        return _pad(vals, _mark_invalid(vals, idx), k)
    vals, idx = scores.topk(k + 1, dim=1)
    tie = (vals[:, k - 1] == vals[:, k]) & ~torch.isneginf(vals[:, k - 1])
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    if bool(tie.any()):
        rows = tie.nonzero().squeeze(1)
        sub = scores[rows]
        thr = vals[rows, k - 1 : k]
        above = sub > thr
        equal = sub == thr
        room = k - above.sum(1, keepdim=True)
        pick = above | (equal & (equal.cumsum(1) <= room))  # lowest indices win the tied slots
        cols = pick.nonzero()[:, 1].view(len(rows), k)
        vals[rows] = sub.gather(1, cols)
        idx[rows] = cols
    idx = idx + col_offset
    vals, idx = canonical_order(vals, idx)
    return vals, _mark_invalid(vals, idx)


# ---------------------------------------------------------------- searchers


class TorchSearcher:
    """Chunked matmul + topk on the tensors' device; never holds more than one block of scores
    (of the embeddings' dtype: a float64 block of `chunk_bytes` holds half the rows of a float32 one)."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, exclude_self: bool,
                 chunk_bytes: int | None = None, chunk_rows: int | None = None):
        self.q, self.g, self.exclude_self = query, gallery, exclude_self
        ng = gallery.shape[0]
        if chunk_bytes is None:
            chunk_bytes = CUDA_CHUNK_BYTES if query.is_cuda else DEFAULT_CHUNK_BYTES
        self.chunk_rows = chunk_rows or max(1, min(query.shape[0], chunk_bytes // (query.element_size() * max(ng, 1))))

    def _scores(self, rows: torch.Tensor) -> torch.Tensor:
        s = self.q[rows] @ self.g.T
        if self.exclude_self:
            s[torch.arange(len(rows), device=s.device), rows] = _NEG_INF
        return s

    def topk(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k neighbours of the queries `rows` (a 1-D index tensor)."""
        outs_v, outs_i = [], []
        for start in range(0, len(rows), self.chunk_rows):
            part = rows[start : start + self.chunk_rows]
            v, i = topk_exact(self._scores(part), k)
            outs_v.append(v)
            outs_i.append(i)
        if not outs_v:
            return self.q.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=self.q.device)
        return torch.cat(outs_v), torch.cat(outs_i)

    def topk_all(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k of every query."""
        return self.topk(torch.arange(self.q.shape[0], device=self.q.device), k)


class FaissSearcher:
    """faiss IndexFlatIP (GPU index for CUDA data when faiss has GPUs), with exact tie handling."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, exclude_self: bool):
        if faiss is None:  # pragma: no cover
            raise ValueError("faiss is not installed")
        self.q, self.g, self.exclude_self = query, gallery, exclude_self
        self.device = query.device
        self.ntotal = gallery.shape[0]
        d = gallery.shape[1]
        self.gpu = query.is_cuda and faiss_gpu_available()
        if self.gpu:
            self._res = faiss.StandardGpuResources()
            cfg = faiss.GpuIndexFlatConfig()
            cfg.device = query.device.index or 0
            self.index = faiss.GpuIndexFlatIP(self._res, d, cfg)
            self.index.add(gallery.contiguous())
            self._fallback = TorchSearcher(query, gallery, exclude_self)
        else:
            self.index = faiss.IndexFlatIP(d)
            self._qnp = np.ascontiguousarray(query.detach().cpu().numpy(), dtype=np.float32)
            self.index.add(np.ascontiguousarray(gallery.detach().cpu().numpy(), dtype=np.float32))

    def _search(self, rows: torch.Tensor, kf: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gpu:
            d, i = self.index.search(self.q[rows].contiguous(), kf)
            return d.to(self.device), i.to(self.device, torch.long)
        d, i = self.index.search(self._qnp[rows.cpu().numpy()], kf)
        return torch.from_numpy(d).to(self.device), torch.from_numpy(i).to(self.device, torch.long)

    def topk(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k neighbours of the queries `rows` (a 1-D index tensor)."""
        outs_v, outs_i = [], []
        for start in range(0, len(rows), _FAISS_QUERY_CHUNK):
            v, i = self._topk_rows(rows[start : start + _FAISS_QUERY_CHUNK], k)
            outs_v.append(v)
            outs_i.append(i)
        if not outs_v:
            return self.q.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=self.device)
        return torch.cat(outs_v), torch.cat(outs_i)

    def topk_all(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.topk(torch.arange(self.q.shape[0], device=self.device), k)

    def _topk_rows(self, rows: torch.Tensor, k: int, kf: int | None = None):
        extra = 1 if self.exclude_self else 0
        # k wanted + self + one probe that shows whether the k-th score ties with something beyond
        kf = min(self.ntotal, kf or k + extra + 1)
        if self.gpu and kf > _FAISS_GPU_MAX_K:
            return self._fallback.topk(rows, k)
        d, i = self._search(rows, kf)
        n = len(rows)
        if extra:
            drop = i == rows.view(-1, 1)
            drop[~drop.any(1), -1] = True  # self ranked beyond the list: drop the last slot instead
            d, i = d[~drop].view(n, kf - 1), i[~drop].view(n, kf - 1)
        d = torch.where(i < 0, torch.full_like(d, _NEG_INF), d)
        complete = kf == self.ntotal
        tie = None
        if complete:  # every candidate is in the list: order, then cut
            d, i = canonical_order(d, i)
            d, i = d[:, :k].contiguous(), i[:, :k].contiguous()
        else:  # no tie at the k-th score: the first k are exactly the top-k set
            tie = (d[:, k - 1] == d[:, k]) & ~torch.isneginf(d[:, k - 1])
            d, i = canonical_order(d[:, :k].contiguous(), i[:, :k].contiguous())
        d, i = _pad(d, i, k)
        i = _mark_invalid(d, i)
        if tie is not None and bool(tie.any()):
            sub = tie.nonzero().squeeze(1)  # the tied score may continue past the list: go deeper
            d[sub], i[sub] = self._topk_rows(rows[sub], k, kf=min(self.ntotal, 2 * kf))
        return d, i


def make_searcher(query: torch.Tensor, gallery: torch.Tensor, exclude_self: bool, backend: str,
                  chunk_rows: int | None = None):
    """A searcher over float32 tensors on one device; backend already resolved ("faiss"/"torch")."""
    if backend == "faiss":
        return FaissSearcher(query, gallery, exclude_self)
    return TorchSearcher(query, gallery, exclude_self, chunk_rows=chunk_rows)


def knn_search(query, k: int, gallery=None, backend: str = "auto", chunk_rows: int | None = None):
    """Exact k nearest neighbours by inner product. gallery=None searches the queries themselves
    with self excluded by index. Returns (scores [nq, k] float32, indices [nq, k] int64); slots
    beyond the gallery size hold index -1 and score -inf. Order: the tie rule of this module."""
    q = _as_matrix(query, "query")
    g = q if gallery is None else _as_matrix(gallery, "gallery").to(q.device)
    if g.shape[1] != q.shape[1]:
        raise ValueError(f"query and gallery dimensions differ: {q.shape[1]} vs {g.shape[1]}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    searcher = make_searcher(q, g, gallery is None, resolve_backend(backend, q.device, q.shape[1]), chunk_rows)
    return searcher.topk_all(k)


def _as_matrix(x, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`x` as a contiguous 2-D tensor of `dtype` (float32 unless asked), checked non-empty and finite."""
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} embeddings must be a non-empty 2-D array [N, D], got shape {tuple(t.shape)}")
    if not (t.is_floating_point()):
        raise ValueError(f"{name} embeddings must be floating point, got {t.dtype}")
    t = t.detach().to(dtype).contiguous()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} embeddings contain NaN or infinite values")
    return t
