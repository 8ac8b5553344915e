"""Retrieval pictures: queries in rows, their top-K gallery neighbours to the right, each result
outlined green (same label as the query: a hit) or red (a miss). Pillow only; PNG written atomically.

``write_retrieval_grid`` draws given images and neighbours; ``retrieval_grid`` computes the top-K of
a model on a dataset (cosine similarity of L2-normalised embeddings, self excluded when the query
set is the gallery, as in reference-implementation §5) and draws them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

QUERY_COLOR = (30, 90, 200)
HIT_COLOR = (0, 160, 0)
MISS_COLOR = (215, 0, 0)
BACKGROUND = (255, 255, 255)
BORDER = 4  # outline width in pixels
GAP = 6  # space between tiles
SEPARATOR = 16  # extra space between the query column and the results
MARGIN = 8
HEADER = 16  # column titles
CAPTION = 14  # label line under each tile


def grid_size(n_queries: int, k: int, tile: int = 96) -> tuple[int, int]:
    """(width, height) in pixels of a picture of ``n_queries`` rows and ``k`` results per row."""
    cell = tile + 2 * BORDER
    width = 2 * MARGIN + (k + 1) * cell + k * GAP + SEPARATOR
    height = 2 * MARGIN + HEADER + n_queries * (cell + CAPTION) + max(0, n_queries - 1) * GAP
    return width, height


def to_rgb_uint8(img: Any, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> np.ndarray:
    """An image (PIL, numpy HxW/HxWxC/CxHxW, or torch CxH xW/HxW tensor) as an HxWx3 uint8 array.

    Float images are de-normalised with ``mean``/``std`` when given, else stretched to their own
    min..max when they leave [0, 1] (dataset tensors are usually ImageNet-normalised).
    """
    if hasattr(img, "detach"):  # torch tensor
        img = img.detach().cpu().float().numpy()
    elif hasattr(img, "convert") and hasattr(img, "size"):  # PIL image
        img = np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # CHW -> HWC
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3, 4) and a.dtype != np.uint8:
        a = np.transpose(a, (1, 2, 0))  # ambiguous tiny images: tensors are CHW
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"cannot draw an image of shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if mean is not None and std is not None and a.shape[2] == len(mean):
            a = a * np.asarray(std, dtype=np.float64) + np.asarray(mean, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo < 0.0 or hi > 1.0:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        a = np.clip(np.nan_to_num(a) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _tile(img: Any, tile: int, mean, std):
    from PIL import Image

    im = Image.fromarray(to_rgb_uint8(img, mean, std))
    im.thumbnail((tile, tile), Image.Resampling.BILINEAR if im.width > tile or im.height > tile else Image.Resampling.NEAREST)
    if im.width < tile and im.height < tile:  # small images (MNIST-like): scale up, keep aspect
        s = tile / max(im.width, im.height)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (tile, tile), BACKGROUND)
    canvas.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return canvas


def _label_text(label: Any) -> str:
    if hasattr(label, "item"):
        label = label.item()
    return str(label)


def write_retrieval_grid(
    path: str | os.PathLike,
    query_images: Sequence[Any],
    gallery_images: Any,
    neighbours: Any,
    query_labels: Sequence[Any],
    gallery_labels: Any,
    k: int,
    tile: int = 96,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> dict[str, Any]:
    """Draws the retrieval picture and writes it as a PNG of ``grid_size(len(query_images), k, tile)``.

    ``neighbours[i][j]`` is the gallery index of query i's (j+1)-th result; ``gallery_images`` and
    ``gallery_labels`` are indexed by it (a list, a dict or any lazy object with ``__getitem__``).
    A result is a hit (green) when its label equals the query's, else a miss (red).
    Returns {"path", "size", "hits"} with hits[i][j] booleans.
    """
    from PIL import Image, ImageDraw, ImageFont

    nq = len(query_images)
    if nq == 0:
        raise ValueError("no queries to draw")
    if k < 1:
        raise ValueError("k must be at least 1")
    nb = [[int(x) for x in list(row)[:k]] for row in neighbours]
    if len(nb) != nq or any(len(r) < k for r in nb):
        raise ValueError(f"neighbours must hold {k} gallery indices for each of the {nq} queries")
    if len(query_labels) != nq:
        raise ValueError("query_labels and query_images differ in length")
    size = grid_size(nq, k, tile)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    cell = tile + 2 * BORDER

    def x_of(col: int) -> int:
        return MARGIN + col * (cell + GAP) + (SEPARATOR if col > 0 else 0)

    def put(img, x: int, y: int, color, caption: str) -> None:
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color)
        canvas.paste(_tile(img, tile, mean, std), (x + BORDER, y + BORDER))
        draw.text((x + 2, y + cell + 1), caption, fill=(40, 40, 40), font=font)

    draw.text((x_of(0) + 2, MARGIN), "query", fill=(0, 0, 0), font=font)
    for j in range(k):
        draw.text((x_of(j + 1) + 2, MARGIN), f"#{j + 1}", fill=(0, 0, 0), font=font)
    hits: list[list[bool]] = []
    for i in range(nq):
        y = MARGIN + HEADER + i * (cell + CAPTION + GAP)
        q_label = _label_text(query_labels[i])
        put(query_images[i], x_of(0), y, QUERY_COLOR, f"label {q_label}")
        row = []
        for j, g in enumerate(nb[i]):
            g_label = _label_text(gallery_labels[g])
            hit = g_label == q_label
            row.append(hit)
            put(gallery_images[g], x_of(j + 1), y, HIT_COLOR if hit else MISS_COLOR, f"{g_label}")
        hits.append(row)
    from ctxsim.files import atomic_write

    path = Path(path)
    with atomic_write(path) as fh:
        canvas.save(fh, format="PNG")
    return {"path": str(path), "size": size, "hits": hits}


class _Images:
    """Lazy ``dataset[i][0]`` access, so only the drawn images are loaded."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, i: int):
        return self.dataset[int(i)][0]


def top_k(q_emb, g_emb, k: int, exclude_self: Optional[Sequence[int]] = None):
    """Indices (Q x k) of the most cosine-similar gallery rows; ``exclude_self[i]`` is query i's own
    gallery index when the query set is the gallery (masked out, reference-implementation §5)."""
    import torch

    sims = q_emb.float() @ g_emb.float().T
    if exclude_self is not None:
        rows = torch.arange(sims.shape[0])
        sims[rows, torch.as_tensor(list(exclude_self), dtype=torch.long)] = float("-inf")
    k = min(k, sims.shape[1] - (1 if exclude_self is not None else 0))
    return sims.topk(k, dim=1).indices


def retrieval_grid(
    model,
    query,
    path: str | os.PathLike,
    gallery=None,
    k: int = 8,
    n_queries: int = 8,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    embeddings: Optional[tuple] = None,
    tile: int = 96,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> dict[str, Any]:
    """Computes a model's top-``k`` for ``n_queries`` seeded random queries and writes the picture.

    ``model`` may be None when ``embeddings`` are given.
    ``query``/``gallery``: datasets yielding (image, label); ``gallery=None`` means the query set is
    the gallery (self excluded). ``embeddings``: optional (q_emb, q_labels, g_emb, g_labels) already
    computed by the caller (e.g. ``ctxsim eval``; g_emb/g_labels None when gallery is None), so the
    data is not embedded twice. Returns write_retrieval_grid's dict plus "queries" (their indices)
    and "precision" (fraction of hits among the drawn results).
    """
    import torch

    if embeddings is None:
        from torch.utils.data import DataLoader

        from ctxsim.eval import extract_embeddings

        def embed(ds):
            loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
            return extract_embeddings(model, loader, device=device)

        q_emb, q_labels = embed(query)
        g_emb, g_labels = embed(gallery) if gallery is not None else (None, None)
    else:
        q_emb, q_labels, g_emb, g_labels = embeddings
    same = gallery is None or g_emb is None
    if same:
        g_emb, g_labels, gallery = q_emb, q_labels, query
    n = q_emb.shape[0]
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=gen)[: min(n_queries, n)].sort().values
    nb = top_k(q_emb[chosen], g_emb, k, exclude_self=chosen.tolist() if same else None)
    q_images = [query[int(i)][0] for i in chosen]
    out = write_retrieval_grid(
        path, q_images, _Images(gallery), nb.tolist(), [q_labels[int(i)] for i in chosen],
        g_labels, nb.shape[1], tile=tile, mean=mean, std=std,
    )
    flat = [h for row in out["hits"] for h in row]
    out["queries"] = [int(i) for i in chosen]
    out["precision"] = sum(flat) / len(flat) if flat else 0.0
    return out


def checkpoint_grid(checkpoint: str | os.PathLike, path: str | os.PathLike, k: int = 8, n_queries: int = 8,
                    seed: int = 0, device: str = "cpu", which: Optional[str] = None, tile: int = 96,
                    **data_kw: Any) -> dict[str, Any]:
    """The retrieval picture of a saved model on its own dataset's test split (the checkpoint's
    config names the dataset, root and resolution; ``data_kw`` overrides build options)."""
    from ctxsim.train import load_checkpoint_model
    from ctxsim.train.build import build_run_data

    model, cfg = load_checkpoint_model(checkpoint, which=which)
    bundle = build_run_data(cfg, **data_kw)
    model.to(device)
    return retrieval_grid(model, bundle.query, path, gallery=bundle.gallery, k=k, n_queries=n_queries,
                          seed=seed, device=device, batch_size=cfg.eval_batch_size, tile=tile)
