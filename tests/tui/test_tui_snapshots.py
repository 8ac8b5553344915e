"""SVG snapshots of every view on the fixed seeded registry (clock injected, no timings), at the
smallest terminal the dashboard is made for (80×24) and a large one (200×50).

Update after an intended change with: python -m pytest tests/tui/test_tui_snapshots.py --snapshot-update
(then look at the SVGs: they are the product).
"""

from __future__ import annotations

import pytest
from tui_helpers import settled

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((200, 50), id="200x50")]


async def _runs_loaded(pilot):
    from ctxsim.tui.screens.runs import RunsScreen

    await settled(pilot, RunsScreen)


async def _detail(pilot, job: str):
    from ctxsim.tui.screens.detail import DetailScreen

    scr = await settled(pilot)
    scr.table.move_to_key(job)
    await pilot.press("enter")
    return await settled(pilot, DetailScreen)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_runs(make_app, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_runs_loaded)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_runs_filtered_sorted_marked(make_app, snap_compare, size):
    async def before(pilot):
        from ctxsim.tui.widgets.filter_bar import FilterBar

        scr = await settled(pilot)
        scr.query_one(FilterBar).set_values(loss="hybrid")
        scr.table.sort_by("best", reverse=True)
        await pilot.pause()
        scr.table.move_to_key("1")
        await pilot.press("space")

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_help(make_app, snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_detail(make_app, snap_compare, size):
    async def before(pilot):
        await _detail(pilot, "2")

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_detail_config(make_app, snap_compare, size):
    async def before(pilot):
        await _detail(pilot, "1")
        await pilot.press("2")

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_detail_failed_history(make_app, snap_compare, size):
    async def before(pilot):
        await _detail(pilot, "3")
        await pilot.press("4")

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_compare(make_app, snap_compare, size):
    async def before(pilot):
        from ctxsim.tui.screens.compare import CompareScreen

        scr = await settled(pilot)
        for key in ("1", "2", "6"):
            scr.table.move_to_key(key)
            await pilot.press("space")
        await pilot.press("c")
        await settled(pilot, CompareScreen)

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_diff(make_app, snap_compare, size):
    async def before(pilot):
        from ctxsim.tui.screens.diff import DiffScreen

        scr = await settled(pilot)
        for key in ("1", "3"):
            scr.table.move_to_key(key)
            await pilot.press("space")
        await pilot.press("d")
        await settled(pilot, DiffScreen)

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_queue(make_app, snap_compare, size):
    async def before(pilot):
        from ctxsim.tui.screens.queue import QueueScreen

        await settled(pilot)
        await pilot.press("w")
        await settled(pilot, QueueScreen)

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_new_run_form(make_app, snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("n")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_paper_table(make_app, seeded, snap_compare, size):
    from test_tui_paper_table import open_from_compare, shown
    from tui_seed import fill_paper_cells

    fill_paper_cells(seeded)

    async def before(pilot):
        await open_from_compare(pilot, ("3",))
        await pilot.press("t")
        await shown(pilot, 224)

    assert snap_compare(make_app(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_studies(make_app, seeded, snap_compare, size):
    from test_tui_studies import _study

    _study(seeded)

    async def before(pilot):
        from ctxsim.tui.screens.studies import StudiesScreen

        await settled(pilot)
        await pilot.press("T")
        await settled(pilot, StudiesScreen)

    assert snap_compare(make_app(), terminal_size=size, run_before=before)
