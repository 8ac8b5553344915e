"""Writes the dashboard makes, through the queue's library functions (ctxsim.registry.jobs).

Each returns a one-line message for the status line or raises CtxsimError with one line.
"""

from __future__ import annotations

import shlex
from typing import Optional

from ctxsim.errors import ConfigError, CtxsimError
from ctxsim.registry.db import Registry


def parse_overrides(text: str) -> list[str]:
    """``"epochs=2 lr=1e-4 name='a b'"`` -> ["epochs=2", "lr=1e-4", "name=a b"]; ConfigError if malformed."""
    try:
        parts = shlex.split(text.replace(",", " ").replace("\n", " "))
    except ValueError as e:
        raise ConfigError(f"overrides: {e}") from None
    for p in parts:
        if "=" not in p or p.startswith("="):
            raise ConfigError(f"override {p!r} is not key=value")
    return parts


def build_config(dataset: str, loss: str, resolution: int, overrides: str = ""):
    """The recipe for dataset/loss/resolution with ``key=value`` overrides, validated and checked as
    ``ctxsim run`` checks it (``check_config``: seed range, finite numbers, weights vs arch, the loss's
    options); ConfigError with one line. The host checks (data, device) are the worker's: the
    dashboard may run on another machine than the workers."""
    from ctxsim.train.configure import configure
    from ctxsim.train.preflight import check_config

    cfg = configure(dataset, loss, int(resolution), sets=parse_overrides(overrides))
    check_config(cfg)
    return cfg


def enqueue_run(reg: Registry, dataset: str, loss: str, resolution: int, overrides: str = "",
                name: Optional[str] = None, priority: int = 0) -> int:
    """Validates and queues a run for the workers; returns its job id."""
    from ctxsim.registry import jobs

    cfg = build_config(dataset, loss, resolution, overrides)
    return jobs.enqueue(reg, cfg, name=name or None, priority=int(priority))


def cancel_job(reg: Registry, job_id: int) -> str:
    from ctxsim.registry import jobs

    state = jobs.cancel(reg, job_id)
    if state == "cancel_requested":
        return f"job {job_id}: cancel requested (its worker stops it)"
    return f"job {job_id}: cancelled"


def retry_job(reg: Registry, job_id: int) -> str:
    from ctxsim.registry import jobs

    jobs.retry(reg, job_id)
    return f"job {job_id}: queued again"


def change_priority(reg: Registry, job_id: int, delta: int) -> str:
    """Moves a queued job up (delta > 0) or down the queue (workers claim highest priority first)."""
    from ctxsim.registry import jobs

    new = jobs.set_priority(reg, job_id, delta, relative=True) + delta
    return f"job {job_id}: priority {new}"


__all__ = ["CtxsimError", "build_config", "cancel_job", "change_priority", "enqueue_run",
           "parse_overrides", "retry_job"]
