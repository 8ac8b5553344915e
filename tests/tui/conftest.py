"""Fixtures of the dashboard tests: the fixed seeded registry and an app factory."""

from __future__ import annotations

import pytest
from tui_seed import build_seeded_registry, fixed_clock


@pytest.fixture
def seeded(tmp_path):
    reg = build_seeded_registry(tmp_path / "seeded.db")
    yield reg
    reg.dispose()


@pytest.fixture
def make_app(seeded):
    from ctxsim.tui.app import CtxsimApp

    def make(**kw):
        kw.setdefault("clock", fixed_clock)
        kw.setdefault("poll_interval", None)
        kw.setdefault("label", "seeded registry")
        kw.setdefault("show_timings", False)
        kw.setdefault("load_baselines", False)
        kw.setdefault("gpu_probe", lambda: None)  # snapshots must not depend on this machine's GPUs
        kw.setdefault("bell", False)
        return CtxsimApp(seeded, **kw)

    return make
