"""What produced a job: git commit + dirty flag of the ctxsim source tree and package versions."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("ctxsim", "torch", "torchvision", "numpy", "faiss-gpu", "faiss-cpu",
            "pytorch-metric-learning", "scikit-learn", "sqlalchemy")


def _git(args: list[str], cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=4)
def git_state(path: Optional[str] = None) -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the git checkout holding ``path`` (default: the ctxsim sources).

    (None, None) outside a checkout or without git. Dirty means tracked files differ from HEAD.
    """
    import ctxsim

    where = Path(path) if path else Path(ctxsim.__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], where)
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return commit, bool(status) if status is not None else None


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, Any]:
    """Installed versions of the packages that change results (read from metadata: no imports)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance() -> dict[str, Any]:
    """{git_commit, git_dirty, versions_json} as stored on each job at enqueue."""
    commit, dirty = git_state()
    return {"git_commit": commit, "git_dirty": dirty, "versions_json": json.dumps(package_versions(), sort_keys=True)}
