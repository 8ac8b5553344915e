"""Shared fixtures. Outside components (PostgreSQL, tmux, fashion-mnist files) skip with a stated
reason where absent, and fail instead when CI=true (CI installs and starts them)."""

from __future__ import annotations

import os
import random
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skips the test (or fails it in CI) when an outside component is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (fair timings, the same float sums on any machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path_factory, monkeypatch):
    """No test writes ./experiments.db or ./runs: the default registry and run folders point into a
    temporary folder unless a test sets its own."""
    base = tmp_path_factory.mktemp("default-registry")
    monkeypatch.setenv("CTXSIM_DB", str(base / "experiments.db"))
    monkeypatch.setenv("CTXSIM_RUNS", str(base / "runs"))
    yield


@pytest.fixture
def registry(tmp_path):
    """A fresh SQLite registry in a temporary folder."""
    from ctxsim.registry.db import open_registry

    reg = open_registry(tmp_path / "experiments.db")
    yield reg
    reg.dispose()


@pytest.fixture
def pg_url():
    """URL of the test PostgreSQL database (started by .ci/start-postgres.sh)."""
    url = os.environ.get("CTXSIM_TEST_PG_URL")
    require(bool(url), "CTXSIM_TEST_PG_URL is not set (run: eval \"$(bash .ci/start-postgres.sh)\")")
    return url


@pytest.fixture
def tmux_bin():
    path = shutil.which("tmux")
    require(path is not None, "tmux is not installed (apt-get install tmux)")
    return path
