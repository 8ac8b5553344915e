"""SVG snapshots of the main screens on the fixed seeded registry (clock injected, no timings).

Update after an intended change with: python -m pytest tests/tui/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

from tui_helpers import settled

SIZE = (160, 40)


async def _runs_loaded(pilot):
    from ctxsim.tui.screens.runs import RunsScreen

    await settled(pilot, RunsScreen)


def test_snapshot_runs(make_app, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=_runs_loaded)


def test_snapshot_runs_filtered_sorted_marked(make_app, snap_compare):
    async def before(pilot):
        from ctxsim.tui.widgets.filter_bar import FilterBar

        scr = await settled(pilot)
        scr.query_one(FilterBar).set_values(loss="hybrid")
        scr.table.sort_by("best", reverse=True)
        await pilot.pause()
        scr.table.move_to_key("1")
        await pilot.press("space")

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_snapshot_detail(make_app, snap_compare):
    async def before(pilot):
        from ctxsim.tui.screens.detail import DetailScreen

        scr = await settled(pilot)
        scr.table.move_to_key("2")
        await pilot.press("enter")
        await settled(pilot, DetailScreen)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_snapshot_detail_config(make_app, snap_compare):
    async def before(pilot):
        from ctxsim.tui.screens.detail import DetailScreen

        scr = await settled(pilot)
        scr.table.move_to_key("1")
        await pilot.press("enter")
        await settled(pilot, DetailScreen)
        await pilot.press("2")

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_snapshot_compare(make_app, snap_compare):
    async def before(pilot):
        from ctxsim.tui.screens.compare import CompareScreen

        scr = await settled(pilot)
        for key in ("1", "2", "6"):
            scr.table.move_to_key(key)
            await pilot.press("space")
        await pilot.press("c")
        await settled(pilot, CompareScreen)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_snapshot_queue(make_app, snap_compare):
    async def before(pilot):
        from ctxsim.tui.screens.queue import QueueScreen

        await settled(pilot)
        await pilot.press("w")
        await settled(pilot, QueueScreen)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_snapshot_new_run_form(make_app, snap_compare):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("n")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)
