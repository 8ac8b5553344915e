"""This process's rank and world size under torchrun (docs/architecture.md §5.2).

Torch-free on purpose: the worker and the job entry (``ctxsim.runner.torchrun``) read them before,
or without, importing torch. ``ctxsim.train.distributed`` re-exports both.
"""

from __future__ import annotations

import os


def env_rank() -> int:
    """This process's global rank under torchrun (``RANK``), 0 otherwise."""
    return int(os.environ.get("RANK", "0") or 0)


def env_world_size() -> int:
    """Processes in the job (``WORLD_SIZE`` set by torchrun), 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)
