"""Loss benchmark: forward+backward time and peak memory of every ctxsim loss, and the hybrid loss
against a plain transcription of the reference formulas (reference-implementation §1.2-1.4) in the same run.

    python benchmarks/losses.py                      # B = 64,128,256; D = 512,2048; 1 thread
    python benchmarks/losses.py --batch 128 --dims 512 --losses hybrid,contrastive --reps 5

Time (process CPU time on CPU, wall time on CUDA): median of --reps forward+backward passes after one warm-up pass (one pass when the
warm-up took over a second); hybrid vs plain: best of --compare-reps alternating passes.
Memory on CPU: peak of the running sum of the allocations and frees torch.profiler records
(profile_memory=True) during one forward+backward, i.e. memory allocated on top of the inputs.
Memory on CUDA: torch.cuda.max_memory_allocated minus the memory held before the pass.
Proxy losses use 100 classes; labels are B/4 classes x 4 images (IPC = 4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from ctxsim.losses import LOSSES, build_loss

NUM_CLASSES = 100


# ----------------------------------------------------------------------------- plain transcription
class _PlainGreaterThan(torch.autograd.Function):
    """1[x >= t]; backward slope 10 for x, -10 for t (written from reference-implementation §1.2 step 3)."""

    @staticmethod
    def forward(ctx, x, t):
        ctx.save_for_backward(x, t)
        return (x >= t).float()

    @staticmethod
    def backward(ctx, g):
        return g * 10.0, -g * 10.0


def plain_contextual_similarity(S, k, eps):
    """reference-implementation §1.2 steps 1-10, one line per step, three matmuls."""
    D = (2.0 - 2.0 * S).clamp(min=0.0)
    top = (-D).topk(k)[0]
    N = _PlainGreaterThan.apply(-D + eps, top[:, -1:].detach())
    inter = (N @ N.T) / N.sum(1, keepdim=True).detach()
    M = 1.0 - N
    inter_not = (M @ M.T) / M.sum(1, keepdim=True).detach()
    W_tilde = 0.5 * (inter + inter_not) * N
    N2 = _PlainGreaterThan.apply(-D + eps, top[:, k // 2 - 1:k // 2].detach())
    R = N2 * N2.T
    J = (R @ W_tilde) / R.sum(1, keepdim=True)
    return 0.5 * (J + J.T)


def plain_hybrid(embeddings, labels, lam=0.4, gamma=0.1, eps=0.05, pos_margin=0.75, neg_margin=0.6,
                 reg_sim=0.25, k=4):
    """reference-implementation §1.3-1.4, the 256 (main.py) weighting."""
    f = F.normalize(embeddings.float(), dim=1)
    S = f @ f.T
    B = S.shape[0]
    W = (labels.unsqueeze(0).T == labels.unsqueeze(0)).float()
    J = plain_contextual_similarity(S, k, eps)
    I_neg = torch.ones_like(J) - torch.eye(B, device=J.device)
    ctx = (((1.0 - J).square() * W * I_neg).sum() + (J.square() * (1.0 - W) * I_neg).sum()) / B / B
    reg = (S.mean() - reg_sim).square()
    L_pos = F.relu(pos_margin - S) * W
    L_neg = F.relu(S - neg_margin) * (1.0 - W)
    n_pos, n_neg = (L_pos > 0).sum(), (L_neg > 0).sum()
    l_p = L_pos.sum() / n_pos if n_pos > 0 else torch.zeros((), device=S.device)
    l_n = L_neg.sum() / n_neg if n_neg > 0 else torch.zeros((), device=S.device)
    return lam * ctx + gamma * reg + (1.0 - lam - gamma) * (l_p + l_n)


# ----------------------------------------------------------------------------- measurement
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLOCK = {"clock": time.perf_counter}


def _now():
    return _CLOCK["clock"]()


def _inputs(B, D, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
    y = torch.arange(B // 4).repeat_interleave(4).to(device)
    return x, y


def _step(fn, x, y):
    x.grad = None
    loss = fn(x, y)
    loss.backward()
    return loss


def time_pass(fn, x, y, reps, device, slow_s=1.0):
    """Median seconds of one forward+backward, after a warm-up pass (one timed pass only when the
    warm-up took longer than slow_s, to keep the default run short)."""
    t0 = _now()
    _step(fn, x, y)
    _sync(device)
    if _now() - t0 > slow_s:
        reps = 1
    times = []
    for _ in range(reps):
        t0 = _now()
        _step(fn, x, y)
        _sync(device)
        times.append(_now() - t0)
    return statistics.median(times)


def peak_memory(fn, x, y, device):
    """Peak bytes allocated during one forward+backward, on top of what was live before."""
    if device.type == "cuda":
        x.grad = None
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(fn, x, y)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    x.grad = None  # freeing an older gradient inside the window would offset the running sum
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, x, y)
    live = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        if ev.self_cpu_memory_usage:
            live += ev.self_cpu_memory_usage
            peak = max(peak, live)
    return peak


def compare_interleaved(fa, fb, x, y, reps, device):
    """Best (minimum) times of fa and fb measured in alternation: on a shared, noisy CPU the minimum
    is the estimate least disturbed by other processes."""
    _step(fa, x, y), _step(fb, x, y)
    ta, tb = [], []
    for _ in range(reps):
        for f, acc in ((fa, ta), (fb, tb)):
            _sync(device)
            t0 = _now()
            _step(f, x, y)
            _sync(device)
            acc.append(_now() - t0)
    return min(ta), min(tb)


def agreement(x, y):
    """Max |difference| of value and gradient between ctxsim's hybrid and the plain transcription."""
    ours = build_loss("hybrid", convention="256")
    xa = x.detach().clone().requires_grad_(True)
    xb = x.detach().clone().requires_grad_(True)
    la, lb = ours(xa, y), plain_hybrid(xb, y)
    la.backward(), lb.backward()
    return abs(la.item() - lb.item()), float((xa.grad - xb.grad).abs().max())


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="64,128,256")
    ap.add_argument("--dims", default="512,2048")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compare-reps", type=int, default=21, help="alternating reps for hybrid vs plain")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of tables")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # on CPU, process CPU time: other processes on a shared machine do not inflate it
    _CLOCK["clock"] = time.process_time if device.type == "cpu" else time.perf_counter
    clock = "process CPU time" if device.type == "cpu" else "wall time"
    batches = [int(b) for b in args.batch.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    names = [n.strip() for n in args.losses.split(",") if n.strip()]
    mem_kind = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler CPU allocations"

    rows = []
    for name in names:
        for D in dims:
            loss_fn = build_loss(name, num_classes=NUM_CLASSES, embedding_size=D).to(device)
            for B in batches:
                x, y = _inputs(B, D, device)
                t = time_pass(loss_fn, x, y, args.reps, device)
                m = peak_memory(loss_fn, x, y, device)
                rows.append({"loss": name, "B": B, "D": D, "ms": t * 1e3, "peak_MiB": m / 2**20})

    cmp_rows = []
    if "hybrid" in names:
        ours = build_loss("hybrid", convention="256")
        for D in dims:
            for B in batches:
                x, y = _inputs(B, D, device, seed=1)
                dv, dg = agreement(x, y)
                ta, tb = compare_interleaved(ours, plain_hybrid, x, y, args.compare_reps, device)
                ma, mb = peak_memory(ours, x, y, device), peak_memory(plain_hybrid, x, y, device)
                cmp_rows.append({"B": B, "D": D, "ctxsim_ms": ta * 1e3, "plain_ms": tb * 1e3,
                                 "time_ratio": ta / tb, "ctxsim_MiB": ma / 2**20, "plain_MiB": mb / 2**20,
                                 "max_value_diff": dv, "max_grad_diff": dg})

    if args.json:
        print(json.dumps({"device": str(device), "threads": args.threads, "memory": mem_kind, "clock": clock,
                          "losses": rows, "hybrid_vs_plain": cmp_rows}, indent=1))
        return 0
    print(f"device {device}, {args.threads} thread(s), torch {torch.__version__}; "
          f"time = {clock}, median of {args.reps} forward+backward (1 if the warm-up took > 1 s); memory = {mem_kind}")
    print()
    print("| loss | D | " + " | ".join(f"B={b} ms" for b in batches) + " | "
          + " | ".join(f"B={b} MiB" for b in batches) + " |")
    print("|---|---|" + "---|" * (2 * len(batches)))
    for name in names:
        for D in dims:
            sel = [r for r in rows if r["loss"] == name and r["D"] == D]
            print(f"| {name} | {D} | " + " | ".join(f"{r['ms']:.1f}" for r in sel) + " | "
                  + " | ".join(f"{r['peak_MiB']:.1f}" for r in sel) + " |")
    if cmp_rows:
        print()
        print(f"hybrid (ctxsim) vs plain transcription of reference-implementation §1.2-1.4, "
              f"best of {args.compare_reps} alternating forward+backward passes")
        print()
        print("| B | D | ctxsim ms | plain ms | ratio | ctxsim MiB | plain MiB | max |Δvalue| | max |Δgrad| |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in cmp_rows:
            print(f"| {r['B']} | {r['D']} | {r['ctxsim_ms']:.2f} | {r['plain_ms']:.2f} | {r['time_ratio']:.2f} | "
                  f"{r['ctxsim_MiB']:.1f} | {r['plain_MiB']:.1f} | {r['max_value_diff']:.1e} | "
                  f"{r['max_grad_diff']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
