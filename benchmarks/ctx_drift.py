"""Which way does the contextual term push similarities? Its descent direction on S, summed over the
positive and the negative pairs of a batch, for batch shapes (classes x samples per class) and k.

The contextual similarity depends only on ranks, so shifting every similarity together leaves the
loss unchanged; its straight-through gradient does not. When k is smaller than the positives of a
class in the batch, most positives can never be k-neighbours, their J stays below 1 and the term
keeps pulling them (and, through the shared thresholds, everything) up: a net upward push that
collapses the embedding (issue 16). The reference recipes pair k with the samples per class
(4 and 4); ctxsim's small recipes now do too.

Embeddings: seeded Gaussian clusters (64-d, one centre per class, noise 1.5), ``--trials`` batches
per row. Prints a markdown table; "net" > 0 means one gradient step raises the mean similarity.

    python benchmarks/ctx_drift.py [--trials 20]
"""

from __future__ import annotations

import argparse

import torch

from ctxsim.losses._base import label_matrix
from ctxsim.losses.contextual import contextual_similarity, contextual_term

# (classes, samples per class, k): the small recipes before and after issue 16, and the reference's shape
ROWS = [(5, 16, 4), (5, 16, 8), (5, 16, 16), (20, 4, 4)]


def push(classes: int, per_class: int, k: int, trials: int = 20, seed: int = 0, dim: int = 64,
         noise: float = 1.5) -> tuple[float, float]:
    """Mean over ``trials`` batches of the descent direction -dL_ctx/dS summed over positive pairs
    (off-diagonal) and over negative pairs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    W = label_matrix(labels)
    off = ~torch.eye(len(labels), dtype=torch.bool)
    pos = neg = 0.0
    for _ in range(trials):
        centres = torch.randn(classes, dim, generator=g)
        e = torch.nn.functional.normalize(centres[labels] + noise * torch.randn(len(labels), dim, generator=g), dim=1)
        S = (e @ e.T).requires_grad_(True)
        contextual_term(contextual_similarity(S, k, 0.05), W).backward()
        d = -S.grad
        pos += d[(W > 0) & off].sum().item() / trials
        neg += d[W == 0].sum().item() / trials
    return pos, neg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    print("| batch (classes x per class) | k | push on positives | push on negatives | net |")
    print("|---|---|---|---|---|")
    for classes, per_class, k in ROWS:
        p, n = push(classes, per_class, k, args.trials)
        print(f"| {classes} x {per_class} | {k} | {p:+.3f} | {n:+.3f} | {p + n:+.3f} |")


if __name__ == "__main__":
    main()
