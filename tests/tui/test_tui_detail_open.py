"""Opening a run's detail: its first read runs before the screen is shown (in a thread, while the
UI is idle), so the screen's first frame has the run; a slow read shows the screen anyway."""

from __future__ import annotations

import threading

from tui_helpers import settled, sync, until

from ctxsim.tui.screens import detail as detail_module
from ctxsim.tui.screens.detail import DetailScreen
from ctxsim.tui.screens.runs import RunsScreen
from ctxsim.tui.widgets.run_header import RunHeader


def _header(screen) -> str:
    return str(screen.query_one(RunHeader).render())


@sync
async def test_the_detail_is_shown_with_its_first_read_applied_and_reads_once(make_app, monkeypatch):
    shown_with: list[str] = []
    reads: list[int] = []
    real_load, real_mount = DetailScreen.load, DetailScreen.on_mount

    def counting_load(self):
        reads.append(self.job_id)
        real_load(self)

    def mount_then_look(self):  # what the first frame will draw: on_mount runs before it
        real_mount(self)
        shown_with.append(_header(self))

    monkeypatch.setattr(DetailScreen, "load", counting_load)
    monkeypatch.setattr(DetailScreen, "on_mount", mount_then_look)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        runs = await settled(pilot, RunsScreen)
        runs.table.move_to_key("2")
        await pilot.press("enter")
        await pilot.press("enter")  # a second Enter while the read runs opens nothing more
        det = await settled(pilot, DetailScreen)
        await pilot.pause()
        assert det.job_id == 2 and det.loads == 1
        assert shown_with and shown_with[0].startswith("#2 ")  # the run, not an empty header
        assert reads == [2]  # the resume after the prefetch did not read again
        assert [type(s).__name__ for s in app.screen_stack].count("DetailScreen") == 1
        await pilot.press("escape")
        await settled(pilot, RunsScreen)
        runs.table.move_to_key("2")
        await pilot.press("enter")
        det2 = await settled(pilot, DetailScreen)
        assert det2 is not det and reads == [2, 2]


@sync
async def test_a_slow_first_read_shows_the_screen_first_and_its_data_when_it_comes(make_app, monkeypatch):
    release = threading.Event()
    real_load = DetailScreen.load

    def slow_load(self):
        assert release.wait(20), "the test never released the read"
        real_load(self)

    monkeypatch.setattr(DetailScreen, "load", slow_load)
    monkeypatch.setattr(detail_module, "PREFETCH_WAIT_S", 0.05)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        runs = await settled(pilot, RunsScreen)
        runs.table.move_to_key("2")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DetailScreen), what="the detail shown", pilot=pilot)
        det = app.screen
        assert det.loads == 0 and not _header(det).startswith("#2 ")
        release.set()
        await until(lambda: det.loads >= 1, what="the read applied", pilot=pilot)
        await pilot.pause()
        assert _header(det).startswith("#2 ")
        monkeypatch.setattr(DetailScreen, "load", real_load)
        await pilot.press("escape")  # the screen polls on its own again afterwards
        await settled(pilot, RunsScreen)
