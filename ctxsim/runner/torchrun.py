"""Launching a multi-GPU job under torchrun, and the rank facts a job process needs
(docs/architecture.md §5.2).

Torch-free on purpose: the worker and the job entry import it before (or without) torch. The rank
helpers are ``ctxsim.train.ranks``'s (torch-free too), re-exported here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ctxsim.train.ranks import env_rank, env_world_size

__all__ = ["env_rank", "env_world_size", "supervised", "torchrun_argv", "under_torchrun"]


def under_torchrun() -> bool:
    """True in a process started by torchrun's elastic agent."""
    return "TORCHELASTIC_RUN_ID" in os.environ or env_world_size() > 1


def torchrun_argv(nproc: int, module: str, args: Sequence[str], python: Optional[str] = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m MODULE ARGS`` (an argv list:
    no shell). ``--standalone`` gives each job its own local rendezvous on a free port."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(int(nproc)), "-m", module, *args]


def _parent_of(pid: int) -> Optional[int]:
    """The parent pid of ``pid`` from /proc (None where /proc is missing or the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: the fields after the last ')' are fixed
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def supervised(worker_pid: int, launcher_pid: Optional[int] = None) -> bool:
    """Whether a job process still runs under its worker: its parent is the worker, or (torchrun,
    ``launcher_pid`` = the agent that started us) our parent is still that agent and the agent's
    parent is still the worker. A job whose worker died must not run unsupervised."""
    if launcher_pid is None:
        return os.getppid() == worker_pid
    if os.getppid() != launcher_pid:
        return False
    grand = _parent_of(launcher_pid)
    if grand is None:  # no /proc: fall back to "the worker pid still exists"
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return grand == worker_pid
