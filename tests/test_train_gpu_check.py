"""benchmarks/gpu_check.py: its CPU dry run (tiny sizes) runs end to end, prints every table row and
writes the results file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_gpu_check_cpu_dry_run(tmp_path):
    """Every row the issue-17 targets need is printed, and the results file lands in $OUT."""
    out_dir = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-tiny",
                           "--workdir", str(tmp_path / "imgs")],
                          capture_output=True, text=True, timeout=570, cwd=ROOT,
                          env={**os.environ, "OUT": str(out_dir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "FAILED" not in out
    rows = [f"train {r} cub/hybrid decode={d}" for r in (224, 256) for d in ("cpu", "gpu")]
    for r in (224, 256):
        rows += [f"step {r} ctxsim Trainer.train_step", f"step {r} plain loop (fp16, channels_last, eager)",
                 f"step {r} variant loop (fp16, contiguous, eager)",
                 f"step {r} variant loop (bf16, channels_last, eager)",
                 f"step {r} ratio ctxsim / plain loop", f"step {r} ratio ctxsim / plain loop (contiguous)"]
    rows += ["step 224 variant loop (fp16, channels_last, compile)", "k-NN ctxsim.eval 2000x64",
             "k-NN bare torch mm+topk 2000x64 k=51", "k-NN ratio ctxsim / fastest bare search",
             "CUDA tests (pytest -k cuda)"]
    for row in rows:
        assert row in out, row
    assert len(list((tmp_path / "imgs" / "CUB_200_2011" / "images").rglob("*.jpg"))) == 32
    # the results file: environment, targets, every section, the CUDA tests' output; complete
    files = list(out_dir.glob("gpu-*-cpu-tiny.md"))
    assert len(files) == 1 and f"results: {files[0]}" in out
    md = files[0].read_text()
    assert "Incomplete" not in md and not list(out_dir.glob("*.tmp"))
    for part in ["| torch | ", "| CUDA (torch build) | ", "| GPU | ", "## Targets",
                 "loader stall (steady state), train 256", "step 224 ratio ctxsim / plain loop | >= 0.95",
                 "k-NN ratio ctxsim / fastest bare search | <= 2.0",
                 "## Input pipeline", "## Training step", "## Exact k-NN at iNat size", "## CUDA-only tests",
                 "## torch.compile at 224", "## CUDA tests output", "-k cuda"]:
        assert part in md, part
    for row in rows:
        assert f"| {row}" in md, row


def test_gpu_check_needs_cuda_or_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real check would run")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "--cpu-tiny" in proc.stderr
