"""The wheel holds every package of the source tree (the package list is found, not hand-written)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _source_packages() -> set[str]:
    """Every folder with an __init__.py, as the import name it is installed under."""
    out = set()
    for top, name in (("ctxsim", "ctxsim"), ("cli", "ctxsim.cli"), ("tui", "ctxsim.tui")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            if "__pycache__" in rel.parts or (top == "ctxsim" and rel.parts[:1] in (("cli",), ("tui",))):
                continue
            out.add(".".join([name, *rel.parts]))
    return out


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_its_data(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    src = tmp_path / "src"
    for rel in filter(None, tracked.split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("ctxsim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    expected = _source_packages()
    assert {"ctxsim.tuning", "ctxsim.cli", "ctxsim.tui.screens", "ctxsim.registry.alembic.versions"} <= expected
    assert expected - in_wheel == set(), "packages missing from the wheel"
    for data in ("ctxsim/tui/app.tcss", "ctxsim/baselines/paper-results.csv"):
        assert data in names, data
