"""Pilot tests of what a daily user reaches for (issue 15): 80×24 layout, help and keys, navigation
and safety, history, the new-run form, notices, events paging and writes waiting for a lock."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select
from tui_helpers import open_detail, refreshed, settled, sync, until
from tui_seed import FIXED_NOW

from ctxsim.registry.models import Job, JobEvent
from ctxsim.registry.sink import RegistrySink
from ctxsim.train.events import Event

SMALL = (80, 24)
LARGE = (200, 50)


# --- 1. 80×24 first -------------------------------------------------------------------------------
@sync
async def test_80x24_key_columns_fixed_id_warnings_first_and_key_bar(make_app):
    from ctxsim.tui.format import KEY_COLUMNS
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.key_bar import KeyBar

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        shown = scr.table.shown_columns
        assert set(KEY_COLUMNS) <= set(shown) and shown[0] == "id" and "gpu" not in shown
        assert scr.table.fixed_columns == 1
        # warnings first, never cut: the dead worker can be read at 80 columns
        text = scr.status.text
        assert text.startswith("⚠ worker gpu02-w1 dead (no heartbeat)")
        assert text.index("1 running without heartbeat") < text.index("7 runs")
        bar = scr.query_one(KeyBar)
        assert {"Help", "Search", "Quit"} <= set(bar.shown)
        # the detail header is one line
        scr.table.move_to_key("2")
        await pilot.press("enter")
        from ctxsim.tui.screens.detail import DetailScreen
        from ctxsim.tui.widgets.run_header import RunHeader

        det = await settled(pilot, DetailScreen)
        header = det.query_one(RunHeader)
        assert header.size.height == 1
        assert "ETA 31m40s" in str(header.render())


@sync
async def test_live_cell_update_is_painted(make_app, seeded):
    """Cells are updated in place (only their cached renders dropped): the screen shows the new value."""
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        t = scr.table
        row_y = t.row_keys.index("2") + 1  # + the header line

        def line() -> str:
            return t.render_line(row_y).text

        assert " 12/20 " in line() and " 7 " not in line()
        painted = line()
        with seeded.begin() as s:
            s.get(Job, 2).epoch = 13
        await refreshed(pilot)
        await pilot.pause()
        assert " 13/20 " in line() and line() != painted
        assert " 5/20 " not in line() and t.render_line(row_y + 1).text.split()[0] == "1"


@sync
async def test_wide_terminal_reveals_columns_and_overrides_on_demand(make_app):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert {"name", "run", "delta", "seed", "elapsed", "gpu"} <= set(scr.table.shown_columns)
        assert "overrides" not in scr.table.shown_columns
        await pilot.press("o")
        assert "overrides" in scr.table.shown_columns
        await pilot.press("o")
        assert "overrides" not in scr.table.shown_columns


def test_key_bar_keeps_help_search_quit_when_narrow():
    from ctxsim.tui.widgets.key_bar import fit_keys

    items = [("?", "Help", "help", None), ("/", "Search", "search", None), ("⏎", "Detail", "open", None),
             ("c", "Compare", "compare", None), ("w", "Queue", "app.queue", None), ("q", "Quit", "back", None)]
    assert [i[1] for i in fit_keys(items, 40)] == ["Help", "Search", "Detail", "Quit"]
    assert [i[1] for i in fit_keys(items, 10)] == ["Help", "Search", "Quit"]
    assert fit_keys(items, 200) == items


# --- 2. help and keys -----------------------------------------------------------------------------
@sync
async def test_help_key_palette_and_escape(make_app):
    from ctxsim.tui.screens.help import HelpScreen
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.plain
        assert "Compare" in text and "Diff configs" in text and "first / last row" in text
        await pilot.press("escape")
        assert app.screen is scr
        titles = [c.title for c in app.get_system_commands(scr)]
        assert "Queue" in titles and "Copy run command" in titles and "Help" in titles
        # a palette command runs the action (here: the queue view)
        cmd = next(c for c in app.get_system_commands(scr) if c.title == "Queue")
        await cmd.callback()
        from ctxsim.tui.screens.queue import QueueScreen

        assert isinstance(await settled(pilot, QueueScreen), QueueScreen)


@sync
async def test_vim_and_home_end_keys_move_rows(make_app):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        t = scr.table
        assert t.current_id() == 7
        await pilot.press("j", "j")
        assert t.current_id() == 5
        await pilot.press("k")
        assert t.current_id() == 6
        await pilot.press("G")
        assert t.current_id() == 1
        await pilot.press("g")
        assert t.current_id() == 7
        await pilot.press("end")
        assert t.current_id() == 1
        await pilot.press("home")
        assert t.current_id() == 7 and t.scroll_x == 0


# --- 7. navigation and safety ---------------------------------------------------------------------
def test_missing_registry_is_one_line_not_a_new_registry(tmp_path):
    from ctxsim.errors import NoRegistryError
    from ctxsim.tui.app import CtxsimApp

    target = tmp_path / "no" / "such" / "x.db"
    with pytest.raises(NoRegistryError) as ei:  # the same error (exit 3) as `ctxsim tui` and `ctxsim ls`
        CtxsimApp(db=f"sqlite:///{target}")
    assert str(target) in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "no").exists()
    # what `ctxsim tui --serve` runs per browser says it in one line too
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ctxsim.tui", "--db", str(target)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 3 and r.stderr.strip() == f"error: {ei.value}" and not (tmp_path / "no").exists()


@sync
async def test_q_goes_back_one_level_and_quits_only_from_the_top(make_app):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        await pilot.press("enter")
        await settled(pilot, DetailScreen)
        await pilot.press("q")
        assert app.screen is scr and app.is_running
        await pilot.press("w")
        await pilot.press("q")
        assert app.screen is scr and app.is_running
        await pilot.press("q")
        await until(pilot=pilot, pred=lambda: not app.is_running)


@sync
async def test_tab_keys_work_whatever_has_focus(make_app):
    from textual.widgets import TabbedContent

    from ctxsim.tui.screens.detail import DetailScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settled(pilot)
        await pilot.press("enter")
        det = await settled(pilot, DetailScreen)
        tabs = det.query_one(TabbedContent)
        for _ in range(3):
            await pilot.press("4")
            await pilot.press("tab")  # focus moves into the tabs or a table
            await pilot.press("2")
            assert tabs.active == "config", app.focused
            await pilot.press("tab", "tab")
            await pilot.press("1")
            assert tabs.active == "curves", app.focused


@sync
async def test_actions_only_where_they_apply(make_app, seeded):
    from ctxsim.tui.screens.confirm import ConfirmScreen
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        scr.table.move_to_key("1")  # done
        await pilot.press("x")
        assert not isinstance(app.screen, ConfirmScreen)
        assert "job 1 is done: only queued or running jobs can be cancelled" in scr.status.text
        await pilot.press("r")
        assert "only failed or cancelled jobs can be retried" in scr.status.text
        await pilot.press("plus")
        assert "only queued jobs" in scr.status.text
        scr.table.move_to_key("5")  # queued: cancel asks first
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
    with seeded.Session() as s:
        assert s.get(Job, 1).status == "done" and s.get(Job, 5).status == "queued"


@sync
async def test_clone_copy_and_diff(make_app):
    from ctxsim.tui.screens.diff import DiffScreen
    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.new_run_form import NewRunForm

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        scr.table.move_to_key("1")
        await pilot.press("y")
        assert app.clipboard.startswith("ctxsim run -d cub -l hybrid -r 256")
        assert "--name cub-ref" in app.clipboard and "copied" in scr.status.text
        await pilot.press("e")
        assert isinstance(app.screen, NewRunScreen)
        v = app.screen.query_one(NewRunForm).values()
        assert (v["dataset"], v["loss"], v["resolution"], v["name"]) == ("cub", "hybrid", 256, "cub-ref-clone")
        await pilot.press("escape")
        await pilot.press("d")
        assert "mark exactly two runs" in scr.status.text
        for key in ("1", "3"):
            scr.table.move_to_key(key)
            await pilot.press("space")
        await pilot.press("d")
        diff = await settled(pilot, DiffScreen)
        keys = {k for k, _a, _b in diff.rows}
        assert {"loss", "resolution"} <= keys and "lr" not in keys


@sync
async def test_search_matches_tags_config_values_and_status_counts_shown(make_app):
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.filter_bar import FilterBar

    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        scr = await settled(pilot, RunsScreen)
        bar = scr.query_one(FilterBar)
        bar.set_values(text="paper")
        await pilot.pause()
        assert [int(k) for k in scr.table.row_keys] == [2, 1]
        assert "2 of 7 runs shown" in scr.status.text
        bar.set_values(text="lr=8e-05 epochs=5")
        await pilot.pause()
        assert [int(k) for k in scr.table.row_keys] == [7]
        bar.set_values(text="")
        await pilot.pause()
        assert "7 runs" in scr.status.text and "of 7" not in scr.status.text


@sync
async def test_elapsed_sums_attempts_and_every_failure_reason_stays(make_app):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert scr.table.run_rows[3].cells["elapsed"] == "14m00s"  # 5 min (lost) + 9 min (failed)
        scr.table.move_to_key("3")
        await pilot.press("enter")
        det = await settled(pilot, DetailScreen)
        text = str(det.query_one("#attempts").render())
        assert "attempt 1: requeued after 5m00s · requeued: no heartbeat" in text
        assert "attempt 2: failed after 9m00s · DataError: corrupt image" in text


@sync
async def test_detail_header_shows_the_skipped_image_count(make_app, seeded):
    """--skip-bad-images: the done event's ``skipped_images`` is in the run's header when > 0."""
    from ctxsim.tui.widgets.run_header import RunHeader

    async def header(app, pilot, key: str) -> str:
        text = str((await open_detail(pilot, key)).query_one(RunHeader).render())
        await pilot.press("escape")
        return text

    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        assert "skipped" not in await header(app, pilot, "1")  # done, nothing skipped
    with seeded.begin() as s:
        s.add(JobEvent(job_id=1, time=FIXED_NOW, kind="done", message="R@1=0.6500 skipped_images=3",
                       payload={"metrics": {"R@1": 0.65}, "skipped_images": 3}))
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        text = await header(app, pilot, "1")
        assert "3 images skipped" in text, text
        assert "skipped" not in await header(app, pilot, "2")  # another job: not carried over


@sync
async def test_metric_drop_and_finish_ring_the_bell(make_app, seeded):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app(bell=True)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        sink = RegistrySink(seeded, 2)
        sink.emit(Event("eval", {"epoch": 13, "metrics": {"R@1": 0.5}, "split": "test"}))
        sink.flush()
        await refreshed(pilot)
        assert "job 2: R@1 fell from 84.4 to 50.0" in scr.status.text and not rings
        with seeded.begin() as s:
            j = s.get(Job, 2)
            j.status, j.finished_at = "failed", FIXED_NOW
        await refreshed(pilot)
        assert "job 2 failed" in scr.status.text and rings == [1]


# --- 3. curves ------------------------------------------------------------------------------------
def test_curve_helpers_ticks_log_dashes_and_legend():
    from ctxsim.tui.widgets.curve_plot import CurvePlot, dashes, integer_ticks, wants_log

    ticks = integer_ticks(1, 6, 40)
    assert ticks[-1] == 6 and all(isinstance(t, int) for t in ticks) and ticks == sorted(set(ticks))
    assert integer_ticks(0, 6000, 40)[-1] == 6000
    assert wants_log({"loss": [(1, 5.0), (500, 0.01)]}) and not wants_log({"loss": [(1, 1.0), (2, 0.5)]})
    segs = dashes([(0, 0.0), (10, 10.0)], 4)
    assert len(segs) == 4 and segs[0][0] == (0, 0.0) and segs[-1][-1] == (10, 10.0)
    assert all(b[0][0] > a[-1][0] for a, b in zip(segs, segs[1:]))  # gaps between dashes
    plot = CurvePlot("R@1 %", percent=True)
    plot.series = {"#1": [(1, 50.0)], "#2": [(1, 60.0)]}
    plot.reference = {"paper": [(1, 70.0)]}
    plot.hlines = {"paper": 93.8}
    legend = plot.legend()
    assert "⠤ #1" in legend and "• #2" in legend and "╌ paper" in legend and "─ paper 93.8" in legend
    # the metric's name first, then whole legend entries in their series' colours, the rest counted
    assert plot.title_line(20) == "R@1 %  ⠤ #1  +3" and plot.title_line(80).endswith("─ paper 93.8")
    colours = {plot.title_text(80).plain[s.start:s.end]: str(s.style) for s in plot.title_text(80).spans}
    assert colours["⠤ #1"] == "cyan" and colours["• #2"] == "dark_orange"
    assert CurvePlot("a very long metric name", percent=True).title_line(10).endswith("…")


@sync
async def test_curve_plot_draws_one_point_and_empty_series():
    from textual.app import App

    from ctxsim.tui.widgets.curve_plot import CurvePlot

    class Plots(App):
        def compose(self):
            yield CurvePlot("R@1", percent=True, id="a")
            yield CurvePlot("loss", log_y=None, id="b")

    app = Plots()
    async with app.run_test(size=SMALL) as pilot:
        a, b = app.query_one("#a", CurvePlot), app.query_one("#b", CurvePlot)
        a.set_series({"#1": [(1, 93.8)]}, {"paper": [(1, 90.0)]}, {"paper": 91.0})
        b.set_series({"loss": [(3, 0.0)], "empty": []})
        await until(pilot=pilot, pred=lambda: a.draws and b.draws)
        for plot in (a, b):
            assert "cannot draw" not in str(plot.render())


@sync
async def test_loss_axis_log_by_default_when_spanning_decades_and_toggle(make_app):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.widgets.curve_plot import CurvePlot

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot)
        scr.table.move_to_key("2")
        await pilot.press("enter")
        det = await settled(pilot, DetailScreen)
        plot = det.query_one("#loss-plot", CurvePlot)
        await until(pilot=pilot, pred=lambda: plot.series)
        await pilot.press("a")  # the loss terms too
        assert plot.log_y  # the reg term decays over decades
        await pilot.press("L")
        assert not plot.log_y and "linear" in det.status.text
        evals = det.query_one("#r1-plot", CurvePlot)
        assert evals.percent and "paper" in evals.hlines


# --- 8. the new-run form --------------------------------------------------------------------------
@sync
async def test_new_run_form_enter_does_not_submit_and_existing_config_is_named(make_app, seeded):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.new_run_form import NewRunForm

    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("n")
        form = app.screen.query_one(NewRunForm)
        assert form.region.right <= 80 and form.query_one("#enqueue").region.bottom <= 24
        form.query_one("#dataset").value = "digits"
        form.query_one("#name").focus()
        await pilot.press("r", "e", "p", "r", "o", "enter")
        assert isinstance(app.screen, NewRunScreen) and app.focused is not form.query_one("#name")
        await pilot.press("ctrl+s")  # submits
        await until(pilot=pilot, pred=lambda: isinstance(app.screen, RunsScreen))
        with seeded.Session() as s:
            first = s.scalar(select(Job).where(Job.name == "repro"))
        assert first is not None and first.status == "queued"
        # the same config again: not merged silently, named, with Open / New seed
        await pilot.press("n")
        form = app.screen.query_one(NewRunForm)
        form.query_one("#dataset").value = "digits"
        form.query_one("#name").value = "repro-2"
        await pilot.press("ctrl+s")
        await until(pilot=pilot, pred=lambda: form.query_one("#exists").has_class("-shown"))
        assert f"already job #{first.id} 'repro' (queued" in str(form.query_one("#error").render())
        form.query_one("#new-seed").press()
        await until(pilot=pilot, pred=lambda: isinstance(app.screen, RunsScreen))
        with seeded.Session() as s:
            second = s.scalar(select(Job).where(Job.name == "repro-2"))
        assert second is not None and second.id != first.id and second.seed != first.seed
        assert json.loads(second.config_json)["seed"] == second.seed
        # and Open goes to the existing job
        await pilot.press("n")
        form = app.screen.query_one(NewRunForm)
        form.query_one("#dataset").value = "digits"
        await pilot.press("ctrl+s")
        await until(pilot=pilot, pred=lambda: form.query_one("#exists").has_class("-shown"))
        form.query_one("#open-existing").press()
        det = await settled(pilot, DetailScreen)
        assert det.job_id == first.id


@sync
async def test_new_run_form_runs_the_config_preflight_and_queues_nothing(make_app, seeded):
    """The form makes `ctxsim run`'s host-independent checks (ctxsim.train.preflight.check_config):
    a config that could never start is the check's one line in the form, and no job row."""
    from sqlalchemy import func

    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.new_run_form import NewRunForm

    with seeded.Session() as s:
        before = s.scalar(select(func.count()).select_from(Job))
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("n")
        form = app.screen.query_one(NewRunForm)
        form.query_one("#dataset").value = "digits"
        for overrides, line in (("seed=-5", "seed must be an integer from 0 to 4294967295, got -5"),
                                ("lr=nan", "lr must be a finite number, got nan"),
                                ("loss.nosuch=3", "loss 'hybrid' has no option nosuch")):
            form.set_overrides(overrides)
            await pilot.press("ctrl+s")
            await until(pilot=pilot, pred=lambda line=line: line in str(form.query_one("#error").render()))
            text = str(form.query_one("#error").render())
            assert "\n" not in text.strip() and isinstance(app.screen, NewRunScreen), text
    with seeded.Session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == before  # nothing queued


# --- 5. logs and events ---------------------------------------------------------------------------
@sync
async def test_l_opens_the_log_and_events_follow_newest_without_gaps(make_app, seeded):
    from textual.widgets import TabbedContent

    from ctxsim.tui.screens.detail import EVENTS_PAGE, DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.checkpoint_list import EventList

    def add_events(a: int, b: int) -> None:
        with seeded.begin() as s:
            s.add_all([JobEvent(job_id=2, time=FIXED_NOW + timedelta(seconds=i), kind="log", message=f"epoch {i}")
                       for i in range(a, b)])

    add_events(0, 300)
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        scr = await settled(pilot, RunsScreen)
        scr.table.move_to_key("2")
        await pilot.press("l")
        det = await settled(pilot, DetailScreen)
        assert det.query_one(TabbedContent).active == "log"
        events = det.query_one(EventList)

        def messages():
            return [events.get_row_at(i)[2] for i in range(events.row_count)]

        assert len(messages()) == EVENTS_PAGE and messages()[0] == "epoch 299"  # newest first
        add_events(300, 600)  # more than a page between two polls: none skipped
        await refreshed(pilot)
        got = messages()
        assert got[0] == "epoch 599" and got[:400] == [f"epoch {i}" for i in range(599, 199, -1)]
        await pilot.press("b")  # page back
        await until(pilot=pilot, pred=lambda: len(messages()) == 601)
        assert messages()[-1] == "attempt 1 by gpu01-w1 on GPUs 1"


@sync
async def test_w_wraps_long_log_lines_so_their_whole_text_is_on_screen(make_app, seeded, tmp_path):
    from ctxsim.tui.widgets.log_tail import LogTail

    run_dir = tmp_path / "run2"
    run_dir.mkdir()
    tail = "MAP@R 61.53 R@1 98.55 end-of-line"
    long_line = "epoch 3: " + "x" * 120 + " " + tail
    (run_dir / "stdout.log").write_text(f"epoch 1 loss 1.0\n{long_line}\n")
    with seeded.begin() as s:
        s.get(Job, 2).run_dir = str(run_dir)
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        det = await open_detail(pilot, "2", key="l")
        log = det.query_one(LogTail)
        await until(lambda: len(log.lines) == 2, what="the log read", pilot=pilot)
        assert log.virtual_size.width > SMALL[0]  # whole lines: the tail is off screen to the right
        await pilot.press("W")
        await pilot.pause()
        assert log.wrapped and len(log.lines) > 2
        assert max(len(x) for x in log.lines) <= log.scrollable_content_region.width
        assert "".join(x.removeprefix("  ") for x in log.lines[1:]) == long_line  # folded, nothing lost
        with open(run_dir / "stdout.log", "a") as fh:  # lines that come later are folded too
            fh.write("epoch 4: " + "y" * 150 + "\n")
        await refreshed(pilot)
        await until(lambda: any("yyyy" in x for x in log.lines[-2:]), what="the new line", pilot=pilot)
        assert max(len(x) for x in log.lines) <= log.scrollable_content_region.width
        await pilot.press("W")
        await pilot.pause()
        assert not log.wrapped and len(log.lines) == 3 and log.lines[1] == long_line


def test_epoch_log_sink_lines():
    import io

    from ctxsim.runner.epoch_log import EpochLogSink

    out = io.StringIO()
    sink = EpochLogSink(out, every_steps=2)
    sink.emit(Event("start", {"epochs": 3, "steps_per_epoch": 2}))
    sink.emit(Event("step", {"epoch": 1, "step": 1, "loss": 1.5, "images_per_s": 120.0}))
    sink.emit(Event("step", {"epoch": 1, "step": 2, "loss": 1.25, "images_per_s": 130.0}))
    sink.emit(Event("epoch", {"epoch": 1, "loss": 1.3, "seconds": 2.0}))
    sink.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.5}, "split": "test"}))
    lines = [ln.split(" ", 1)[1] for ln in out.getvalue().splitlines()]
    assert lines == ["start: 3 epochs, 2 steps each", "step 2 (epoch 1) loss 1.25 · 130 img/s",
                     "epoch 1/3 loss 1.3 · 2.0 s · 130 img/s", "eval epoch 1 (test): R@1 50.00"]


def test_faiss_loader_noise_is_silenced():
    import logging

    import ctxsim.eval.knn  # noqa: F401 - the faiss import site sets the loader's level

    assert logging.getLogger("faiss.loader").getEffectiveLevel() >= logging.WARNING


# --- 4. per running job ---------------------------------------------------------------------------
def test_gpu_line_names_no_gpu_and_the_job_on_each_gpu():
    from ctxsim.tui.screens.queue import gpu_line

    assert gpu_line(None, {}) == "this machine: no GPU (NVML unavailable)"
    gpus = [{"index": 0, "util": 35, "used": 4 * 2**30, "total": 80 * 2**30},
            {"index": 1, "util": 0, "used": 0, "total": 80 * 2**30}]
    assert gpu_line(gpus, {"0": 7}) == "this machine: GPU0 35% 4.0/80 GiB job 7 · GPU1 0% 0.0/80 GiB idle"


@sync
async def test_queue_view_shows_no_gpu_and_speed_in_runs(make_app, seeded):
    from ctxsim.tui.screens.queue import QueueScreen
    from ctxsim.tui.screens.runs import RunsScreen

    sink = RegistrySink(seeded, 2)
    sink.emit(Event("step", {"epoch": 13, "step": 121, "loss": 0.9, "terms": {}, "lr": 8e-5, "images_per_s": 456.0}))
    sink.flush()
    app = make_app()
    async with app.run_test(size=LARGE) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert scr.table.run_rows[2].cells["speed"] == "456"
        await pilot.press("w")
        q = await settled(pilot, QueueScreen)
        assert "no GPU" in str(q.query_one("#workers-label").render())
        assert q.status.text.startswith("⚠ worker gpu02-w1 dead")


# --- 9. locks and slow writes ---------------------------------------------------------------------
@sync
async def test_write_waiting_for_lock_says_so_and_esc_cancels(make_app, seeded, monkeypatch):
    import ctxsim.tui.writes as writes
    from ctxsim.tui.screens.runs import RunsScreen

    monkeypatch.setattr(writes, "WAIT_NOTICE_AFTER_S", 0.05)
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        scr = await settled(pilot, RunsScreen)
        lock = sqlite3.connect(seeded.sqlite_path, timeout=0)
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            scr.table.move_to_key("5")
            await pilot.press("plus")
            await until(pilot=pilot, pred=lambda: "waiting for the registry lock" in scr.status.text)
            await pilot.press("escape")
            await until(pilot=pilot, pred=lambda: "cancelled while waiting for the registry lock" in scr.status.text)
        finally:
            lock.rollback()
            lock.close()
        with seeded.Session() as s:
            assert s.get(Job, 5).priority == 0  # nothing applied later
        await pilot.press("plus")  # unlocked: applies
        await until(pilot=pilot, pred=lambda: "priority 1" in scr.status.text)


@sync
async def test_detail_header_shows_delta_untrained_once_the_baseline_is_recorded(make_app, seeded):
    """A finished run whose untrained baseline is recorded (ctxsim eval --untrained / compare) shows
    ``Δ untrained`` beside Δ paper: its best R@1 minus the trunk's before training."""
    from ctxsim.baselines.untrained import record_untrained, untrained_key
    from ctxsim.train.recipes import recipe
    from ctxsim.tui.widgets.run_header import RunHeader

    fp = {"version": 1, "dataset": "cub", "val_classes": None,
          "splits": {"train": {"images": 5864, "classes": 100}, "test": {"images": 5924, "classes": 100}}}
    with seeded.begin() as s:
        job = s.get(Job, 1)
        config = job.config_json
        s.add(JobEvent(job_id=1, time=FIXED_NOW, kind="start", message="start", payload={"fingerprint": fp}))

    async def header() -> str:
        async with make_app().run_test(size=LARGE) as pilot:
            return str((await open_detail(pilot, "1")).query_one(RunHeader).render())

    assert "untrained" not in await header()
    # the seeded config is a sketch: its key comes from it, the row's provenance from the recipe
    record_untrained(seeded, untrained_key(config, fp), recipe("cub", "hybrid", 256), {"R@1": 0.5})
    text = await header()
    best = float(text.split("R@1 ", 1)[1].split()[0])
    assert f"Δ untrained {best - 50.0:+.1f}" in text, text
