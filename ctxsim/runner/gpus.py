"""Which GPUs a worker may use, and handing them out to jobs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Optional

from ctxsim.errors import ConfigError

log = logging.getLogger(__name__)


def parse_gpus(spec: Optional[str]) -> Optional[list[str]]:
    """``"0,1"`` -> ["0", "1"]; ``""`` -> [] (CPU only); None -> None (detect)."""
    if spec is None:
        return None
    ids = [p.strip() for p in spec.split(",") if p.strip()]
    for i in ids:
        if not i.isdigit():
            raise ConfigError(f"--gpus: {i!r} is not a GPU index (expected e.g. 0,1,2 or '' for CPU)")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus: repeated GPU index in {spec!r}")
    return ids


def detect_gpus(use_torch: bool = True) -> list[str]:
    """GPU indices visible to this process: CUDA_VISIBLE_DEVICES, else nvidia-smi, else torch.

    Torch is imported only when nvidia-smi is absent and ``use_torch`` (the worker stays light).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("nvidia-smi failed (%s); trying torch", e)
    if not use_torch:
        return []
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # pragma: no cover - broken CUDA install: run CPU jobs
        return []


class GpuPool:
    """Free/busy bookkeeping of a worker's GPUs."""

    def __init__(self, gpus: list[str]) -> None:
        self.all = list(gpus)
        self.busy: dict[int, list[str]] = {}  # job id -> its GPUs

    @property
    def free(self) -> list[str]:
        used = {g for gs in self.busy.values() for g in gs}
        return [g for g in self.all if g not in used]

    def take(self, job_id: int, gpus: list[str]) -> None:
        missing = [g for g in gpus if g not in self.free]
        if missing:
            raise RuntimeError(f"GPUs {missing} are not free")
        self.busy[job_id] = list(gpus)

    def release(self, job_id: int) -> None:
        self.busy.pop(job_id, None)
