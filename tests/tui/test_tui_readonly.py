"""The dashboard on a registry it cannot write (issue 14): it opens the file read-only, shows
everything, says "read-only registry" on the status line, and refuses its writes in one line.

The copy is made read-only with chmod 444. Root can still write such a file, but the registry's
rule (``open_registry``: no write bit at all is read-only, even for root) and SQLite's ``mode=ro``
hold for root too, so these tests take the real code path in CI, which runs as root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest
from tui_helpers import settled, sync
from tui_seed import build_seeded_registry, fixed_clock

from ctxsim.registry import queries


@pytest.fixture
def ro_db(tmp_path):
    """A chmod-444 copy of the seeded registry (its WAL folded in first)."""
    reg = build_seeded_registry(tmp_path / "seeded.db")
    reg.dispose()
    ro = tmp_path / "archive" / "ro.db"
    ro.parent.mkdir()
    shutil.copyfile(tmp_path / "seeded.db", ro)
    os.chmod(ro, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    yield ro
    os.chmod(ro, stat.S_IRUSR | stat.S_IWUSR)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _app(db, **kw):
    from ctxsim.tui.app import CtxsimApp

    return CtxsimApp(db=str(db), clock=fixed_clock, poll_interval=None, label="ro registry",
                     show_timings=False, gpu_probe=lambda: None, bell=False, **kw)


def test_readonly_rule_matches_the_registry(ro_db, tmp_path):
    from ctxsim.errors import RegistryError
    from ctxsim.registry.db import open_registry, registry_is_readonly

    assert registry_is_readonly(str(ro_db))
    with pytest.raises(RegistryError, match="read-only"):  # what `ctxsim tui` used to exit 3 with
        open_registry(ro_db, create=False)
    writable = tmp_path / "seeded.db"
    assert not registry_is_readonly(str(writable))
    assert not registry_is_readonly(str(tmp_path / "missing.db"))  # opening it says it is missing
    assert not registry_is_readonly("notaurl://")


@sync
async def test_dashboard_on_readonly_file_shows_all_and_refuses_writes(ro_db):
    from ctxsim.tui.screens.confirm import ConfirmScreen
    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.queue import QueueScreen
    from ctxsim.tui.screens.runs import RunsScreen

    before = _digest(ro_db)
    app = _app(ro_db, load_baselines=True)  # asked for, but skipped: loading them is a write
    assert app.reg.readonly and app.readonly
    async with app.run_test(size=(200, 50)) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert len(scr.table.rows) == 7  # everything shows
        text = scr.status.text
        assert "⚠ read-only registry" in text
        # warnings first: the dead worker, then read-only, then the rest
        assert text.startswith("⚠ worker gpu02-w1 dead") and text.index("read-only registry") < text.index("7 runs")
        for job, key, words in (("4", "x", "cannot cancel job 4"), ("3", "r", "cannot retry job 3"),
                                ("4", "plus", "cannot change the priority of job 4"),
                                ("2", "e", "cannot queue a new run"), ("2", "n", "cannot queue a new run")):
            scr.table.move_to_key(job)
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, (ConfirmScreen, NewRunScreen)), key
            assert f"read-only registry: {words}" in scr.status.text, (key, scr.status.text)
            assert "error" not in scr.status.text
        await pilot.press("w")
        q = await settled(pilot, QueueScreen)
        assert "⚠ read-only registry" in q.status.text
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and "read-only registry: cannot cancel" in q.status.text
    app.reg.dispose()
    assert _digest(ro_db) == before  # nothing written
    assert not (ro_db.parent / "ro.db-journal").exists()


@sync
async def test_writable_registry_has_no_readonly_notice(make_app):
    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    assert not app.readonly
    async with app.run_test(size=(200, 50)) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert "read-only" not in scr.status.text
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)


def test_readonly_folder_opens_readonly(tmp_path):
    """A writable file in a folder without write permission (no journal can be made there)."""
    reg = build_seeded_registry(tmp_path / "d" / "x.db")
    reg.dispose()
    folder = tmp_path / "d"
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a folder without write bits is still writable, so this case "
                        "cannot be made here (the chmod-444 file tests cover the read-only path)")
        app = _app(folder / "x.db", load_baselines=False)
        assert app.readonly
        assert len(queries.runs_table(app.read_reg)) == 7
        app.reg.dispose()
    finally:
        os.chmod(folder, stat.S_IRWXU)


def _capture_run(monkeypatch):
    from ctxsim.tui.app import CtxsimApp

    seen = []
    monkeypatch.setattr(CtxsimApp, "run", lambda self, *a, **k: seen.append(self))
    return seen


def test_cli_tui_on_readonly_file_starts_the_dashboard(ro_db, monkeypatch):
    """`ctxsim tui --db <read-only file>` used to exit 3 ("registry ... is read-only")."""
    from typer.testing import CliRunner

    import ctxsim.cli.tui_cmd as tui_cmd
    from ctxsim.cli.main import app as cli

    seen = _capture_run(monkeypatch)
    tty = SimpleNamespace(isatty=lambda: True)  # the command sees a terminal (CliRunner swaps sys.stdin)
    monkeypatch.setattr(tui_cmd, "sys", SimpleNamespace(stdin=tty, stdout=tty, executable=sys.executable))
    r = CliRunner().invoke(cli, ["tui", "--db", str(ro_db)])
    assert r.exit_code == 0, r.output
    assert len(seen) == 1 and seen[0].readonly
    seen[0].reg.dispose()


def test_cli_tui_readonly_file_is_not_exit_3(ro_db):
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "tui", "--db", str(ro_db)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    # without a terminal it stops at the terminal check (2), after the registry opened
    assert r.returncode == 2 and "interactive terminal" in r.stderr and "read-only" not in r.stderr


def test_module_entry_on_readonly_file(ro_db, monkeypatch):
    """`python -m ctxsim.tui` (what --serve runs per browser, with CTXSIM_DB set) opens it read-only."""
    from ctxsim.tui.__main__ import main

    seen = _capture_run(monkeypatch)
    monkeypatch.setenv("CTXSIM_DB", f"sqlite:///{ro_db}")
    main([])
    assert len(seen) == 1 and seen[0].readonly
    seen[0].reg.dispose()
