"""The paper-table view (issue 13): `t` in the compare view shows `ctxsim compare --table`'s layout,
published number and ours per cell; `t` toggles 224/256; q and Esc go back."""

from __future__ import annotations

import asyncio
import time

from tui_helpers import settled, sync
from tui_seed import fill_paper_cells


async def shown(pilot, resolution: int, timeout: float = 20.0):
    """Waits until the paper-table view shows the table of ``resolution``."""
    from ctxsim.tui.screens.paper_table import PaperTableScreen

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scr = pilot.app.screen
        if isinstance(scr, PaperTableScreen) and scr.data is not None and scr.data["resolution"] == resolution:
            await pilot.pause()
            return scr
        await asyncio.sleep(0.02)
    raise AssertionError(f"the {resolution} table was not shown in {timeout} s")


async def open_from_compare(pilot, job_ids=("1", "3")):
    """Marks jobs in the runs table, opens compare (c), then the paper table (t)."""
    from ctxsim.tui.screens.compare import CompareScreen

    scr = await settled(pilot)
    for key in job_ids:
        scr.table.move_to_key(key)
        await pilot.press("space")
    await pilot.press("c")
    await settled(pilot, CompareScreen)


def cells(scr) -> dict[str, list[str]]:
    from ctxsim.tui.widgets.paper_table import PaperTable

    table = scr.query_one(PaperTable)
    return {k: [str(c) for c in table._cells[k]] for k in table.row_keys}


@sync
async def test_paper_table_cells_toggle_and_back(make_app, seeded):
    from ctxsim.tui.screens.compare import CompareScreen
    from ctxsim.tui.screens.paper_table import PaperTableScreen

    fill_paper_cells(seeded)
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await open_from_compare(pilot, ("3",))  # cub/contrastive/224 under the cursor: the 224 table
        await pilot.press("t")
        scr = await shown(pilot, 224)
        got = cells(scr)
        assert list(got) == ["contrastive", "triplet", "ms_miner", "proxy_anchor", "proxy_nca", "roadmap", "hybrid"]
        assert got["hybrid"] == ["Hybrid", "71.9 [1]", "72.00 ± 4.97 (n=3)", "91.1 [1]", "1 running", "—", "missing"]
        assert got["triplet"][:5] == ["Triplet", "64.2 [1]", "1 queued", "88.8 [1]", "88.00 (n=1)"]
        assert got["contrastive"][2:5:2] == ["missing", "missing"]  # a tiny run does not fill its cell
        assert "2/21 cells filled · 1 running · 1 queued" in scr.status.info

        await pilot.press("t")  # the 256 table: more datasets and methods, nothing filled
        scr = await shown(pilot, 256)
        got = cells(scr)
        assert "multisimilarity" in got and got["hybrid"][0] == "Hybrid"
        assert len(got["hybrid"]) == 1 + 2 * 5 and all(c == "missing" for c in got["hybrid"][2::2])
        await pilot.press("t")
        await shown(pilot, 224)

        await pilot.press("q")  # back to compare, not quit
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("t")
        await shown(pilot, 224)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen) and not isinstance(app.screen, PaperTableScreen)


@sync
async def test_paper_table_in_help_and_palette(make_app):
    from ctxsim.tui.screens.compare import CompareScreen
    from ctxsim.tui.screens.help import HelpScreen

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await open_from_compare(pilot, ("1",))
        compare = app.screen
        assert "Paper table (224/256)" in [c.title for c in app.get_system_commands(compare)]
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and "t  Paper table (224/256)" in app.screen.plain
        await pilot.press("escape")
        await pilot.press("t")
        scr = await shown(pilot, 256)  # job 1 is a 256 run: its table
        assert scr.data["resolution"] == 256 and isinstance(compare, CompareScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert "t  Table 224/256" in app.screen.plain
