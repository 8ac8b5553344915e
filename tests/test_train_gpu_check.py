"""benchmarks/gpu_check.py: its CPU dry run (tiny sizes) runs end to end and prints the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(400)
def test_gpu_check_cpu_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-tiny",
                           "--workdir", str(tmp_path / "imgs")],
                          capture_output=True, text=True, timeout=380, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "FAILED" not in out
    assert "train 224 cub/hybrid" in out and "train 256 cub/hybrid" in out and "k-NN eval 2000x64" in out
    assert len(list((tmp_path / "imgs" / "CUB_200_2011" / "images").rglob("*.jpg"))) == 32


def test_gpu_check_needs_cuda_or_dry_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real check would run")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "--cpu-tiny" in proc.stderr
