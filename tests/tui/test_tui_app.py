"""Pilot tests: every view and key of the dashboard on the fixed seeded registry."""

from __future__ import annotations

import json

from sqlalchemy import select
from tui_helpers import refreshed, settled, sync, until

from ctxsim.registry.models import Job
from ctxsim.registry.sink import RegistrySink
from ctxsim.train.events import Event

SIZE = (160, 40)


def _job(reg, jid):
    with reg.Session() as s:
        return s.get(Job, jid)


def _visible_ids(scr):
    return [int(k) for k in scr.table.row_keys]


@sync
async def test_runs_table_rows_status_and_dead_worker(make_app):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        assert _visible_ids(scr) == [7, 6, 5, 4, 3, 2, 1]  # newest first
        row1 = scr.table.run_rows[1].cells
        assert row1["progress"] == "20/20" and row1["best"].startswith("68.6 @20")
        # delta = best R@1 (%) - the reference log's final R@1 for 256/cub/Hybrid (68.687)
        assert row1["delta"].plain == f"{68.6 - 68.687:+.1f}".replace("-0.1", "-0.1")
        assert scr.table.run_rows[6].stale and not scr.table.run_rows[2].stale
        assert str(scr.table.run_rows[6].cells["status"]) == "running?"
        assert scr.table.run_rows[2].cells["elapsed"] == "47m30s"  # injected clock
        text = scr.status.text
        assert "7 runs" in text and "worker gpu02-w1 dead" in text and "1 running without heartbeat" in text


@sync
async def test_sort_keys_and_header(make_app):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        await pilot.press("s")  # id -> status, in lifecycle order: running (and lost), queued, failed, done
        assert scr.table.sort_key == "status"
        assert _visible_ids(scr) == [2, 6, 5, 4, 3, 1, 7]
        for _ in range(2):  # status -> epoch -> best R@1
            await pilot.press("s")
        assert scr.table.sort_key == "best"
        assert _visible_ids(scr)[:3] == [2, 6, 1]  # 84.4, 74.2, 68.6 (descending)
        await pilot.press("S")
        assert _visible_ids(scr)[-3:] == [1, 6, 2]
        scr.table.sort_by("id", reverse=True)
        await pilot.pause()
        assert _visible_ids(scr)[0] == 7


@sync
async def test_filters_and_search(make_app):
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.filter_bar import FilterBar

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        bar = scr.query_one(FilterBar)
        bar.set_values(status="running")
        await pilot.pause()
        assert _visible_ids(scr) == [6, 2]
        bar.set_values(status="", dataset="cub")
        await pilot.pause()
        assert _visible_ids(scr) == [5, 3, 1]
        bar.set_values(dataset="", loss="hybrid")
        await pilot.pause()
        assert _visible_ids(scr) == [7, 6, 2, 1]
        await pilot.press("escape")
        await pilot.pause()
        assert len(_visible_ids(scr)) == 7
        await pilot.press("slash", *"paper")  # search matches tags too
        await pilot.pause()
        assert _visible_ids(scr) == [2, 1]
        await pilot.press("enter")  # back to the table
        assert scr.table.has_focus
        await pilot.press("escape")
        await pilot.pause()
        assert len(_visible_ids(scr)) == 7


@sync
async def test_live_update_in_place_keeps_cursor(make_app, seeded):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        await pilot.press("down", "down", "down", "down", "down")  # cursor on job 2
        assert scr.table.current_id() == 2
        rebuilds = scr.table.rebuilds
        sink = RegistrySink(seeded, 2)
        sink.emit(Event("step", {"epoch": 13, "step": 121, "loss": 0.5, "terms": {}}, 1.0))
        sink.emit(Event("epoch", {"epoch": 13, "loss": 0.5, "seconds": 1.0}, 1.0))
        sink.emit(Event("eval", {"epoch": 13, "metrics": {"R@1": 0.9}}, 1.0))
        sink.close()
        await refreshed(pilot)
        row = scr.table.run_rows[2].cells
        assert row["progress"] == "13/20" and row["last_loss"] == "0.5" and row["best"] == "90.0 @13"
        assert scr.table.rebuilds == rebuilds  # cells updated in place, rows not rebuilt
        assert scr.table.cells_updated >= 3
        assert scr.table.current_id() == 2
        # a new job appears on top; the cursor stays on job 2
        from ctxsim.registry.models import Job as J

        with seeded.begin() as s:
            s.add(J(id=8, dataset="cars", loss="triplet", resolution=224, config_json="{}", config_hash="8",
                    status="queued", total_epochs=5))
        await refreshed(pilot)
        assert _visible_ids(scr)[0] == 8 and scr.table.current_id() == 2


@sync
async def test_detail_curves_tabs_log_follow(make_app, seeded, tmp_path):
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.curve_plot import CurvePlot
    from ctxsim.tui.widgets.log_tail import LogTail

    run_dir = tmp_path / "run2"
    run_dir.mkdir()
    (run_dir / "stdout.log").write_text("epoch 1 loss 1.0\nepoch 2 loss 0.9\n")
    (run_dir / "checkpoint.pt").write_bytes(b"x" * 2048)
    with seeded.begin() as s:
        s.get(Job, 2).run_dir = str(run_dir)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        scr.table.move_to_key("2")
        await pilot.press("enter")
        det = await settled(pilot, DetailScreen)
        assert det.job_id == 2
        loss_plot = det.query_one("#loss-plot", CurvePlot)
        eval_plot = det.query_one("#r1-plot", CurvePlot)
        map_plot = det.query_one("#map-plot", CurvePlot)
        # one metric per chart by default; `a` adds the loss terms and R@2..R@K
        assert set(loss_plot.series) == {"loss"} and set(eval_plot.series) == {"R@1"} and set(map_plot.series) == {"MAP@R"}
        await pilot.press("a")
        assert set(loss_plot.series) == {"loss", "ctx", "con", "reg"}
        assert len(loss_plot.series["loss"]) == 120
        assert set(eval_plot.series) == {"R@1", "R@2"}
        assert "paper R@1" in eval_plot.reference and len(eval_plot.reference["paper R@1"]) >= 10
        assert [p[0] for p in eval_plot.series["R@1"]] == [4, 8, 12]
        assert eval_plot.title_line(60).startswith("R@1 %") and "• R@2" in eval_plot.title_line(60)
        log = det.query_one(LogTail)
        assert list(log.lines) == ["epoch 1 loss 1.0", "epoch 2 loss 0.9"]
        # new points and log lines arrive incrementally
        sink = RegistrySink(seeded, 2)
        sink.emit(Event("step", {"epoch": 13, "step": 121, "loss": 0.4, "terms": {"ctx": 0.3}}, 1.0))
        sink.emit(Event("eval", {"epoch": 13, "metrics": {"R@1": 0.9}}, 1.0))
        sink.close()
        with open(run_dir / "stdout.log", "a") as fh:
            fh.write("epoch 3 loss 0.8\npartial")
        await refreshed(pilot)
        assert len(loss_plot.series["loss"]) == 121 and eval_plot.series["R@1"][-1] == (13, 90.0)
        assert list(log.lines)[-1] == "epoch 3 loss 0.8"  # the partial line waits for its newline
        for key, tab in (("2", "config"), ("3", "log"), ("4", "files"), ("1", "curves")):
            await pilot.press(key)
            assert det.query_one("TabbedContent").active == tab
        from ctxsim.tui.widgets.checkpoint_list import CheckpointList, EventList

        assert det.query_one(CheckpointList).row_keys == [str(run_dir / "checkpoint.pt")]
        assert len(det.query_one(EventList).row_keys) >= 1
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_mark_and_compare(make_app):
    from ctxsim.tui.screens.compare import CompareScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.compare_table import CompareTable
    from ctxsim.tui.widgets.curve_plot import CurvePlot

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        scr.table.move_to_key("1")
        await pilot.press("space")
        scr.table.move_to_key("2")
        await pilot.press("space")
        assert scr.table.marked == {1, 2}
        await pilot.press("c")
        cmp_ = await settled(pilot, CompareScreen)
        table = cmp_.query_one(CompareTable)
        assert table.row_keys == ["1", "2"]
        cells = [str(c) for c in table._cells["1"]]
        assert cells[6] == "68.7" and cells[8] == "reference_log" and "cub.o" in cells[9]
        assert cells[7] == "n/c" and table._cells["1"][0].style == "dim"  # seeded runs are not the recipe: greyed
        plot = cmp_.query_one("#cmp-r1", CurvePlot)
        assert set(plot.series) == {"#1", "#2"}
        assert {"paper cub/hybrid/256", "paper cars/hybrid/256"} <= set(plot.reference)
        await pilot.press("enter")  # open the run under the cursor
        from ctxsim.tui.screens.detail import DetailScreen

        det = await settled(pilot, DetailScreen)
        assert det.job_id == 1
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_queue_workers_priority_cancel_retry(make_app, seeded):
    from ctxsim.tui.screens.queue import QueueScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.queue_table import QueueTable
    from ctxsim.tui.widgets.workers_table import WorkersTable

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("w")
        q = await settled(pilot, QueueScreen)
        workers = q.query_one(WorkersTable)
        assert [str(workers._cells[k][3]) for k in workers.row_keys] == ["alive", "dead"]
        table = q.query_one(QueueTable)
        # running first, then queued by priority (job 4 has priority 5), then failed/cancelled
        assert table.row_keys[:4] == ["2", "6", "4", "5"]
        assert set(table.row_keys[4:]) == {"3", "7"}
        table.move_to_key("5")
        await pilot.press("plus")
        await pilot.press("plus")
        await until(lambda: _job(seeded, 5).priority == 2)
        assert _job(seeded, 5).priority == 2
        await pilot.press("minus")
        await until(lambda: _job(seeded, 5).priority == 1)
        assert _job(seeded, 5).priority == 1
        # cancel asks first; "n" keeps the job
        await pilot.press("x")
        await pilot.press("n")
        await pilot.pause()
        assert _job(seeded, 5).status == "queued"
        await pilot.press("x")
        await pilot.press("y")
        await until(lambda: _job(seeded, 5).status == "cancelled")
        assert _job(seeded, 5).status == "cancelled"
        await refreshed(pilot)
        table.move_to_key("3")
        await pilot.press("r")
        await until(lambda: _job(seeded, 3).status == "queued")
        assert _job(seeded, 3).status == "queued"
        await refreshed(pilot)
        assert "job 3: queued again" in q.status.text
        # a refused action is a status line, not a crash
        table.move_to_key("2")
        await pilot.press("r")
        await until(lambda: "error:" in q.status.text)
        assert "only failed or cancelled jobs can be retried" in q.status.text
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_new_run_form_validates_and_enqueues(make_app, seeded):
    from ctxsim.tui.screens.new_run import NewRunScreen
    from ctxsim.tui.screens.runs import RunsScreen
    from ctxsim.tui.widgets.new_run_form import NewRunForm

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, NewRunScreen)
        form = app.screen.query_one(NewRunForm)
        assert "icons" in [value for _, value in form.query_one("#dataset")._options]  # every dataset is offered
        form.query_one("#enqueue").press()
        await pilot.pause()
        assert "choose dataset" in str(form.query_one("#error").render())
        form.query_one("#dataset").value = "digits"
        form.query_one("#overrides").value = "epochs=2 no_such_key=3"
        form.query_one("#enqueue").press()
        await until(lambda: "no_such_key" in str(form.query_one("#error").render()))
        assert "no_such_key" in str(form.query_one("#error").render())
        form.query_one("#overrides").value = "epochs=2"
        form.query_one("#name").value = "from-the-form"
        form.query_one("#enqueue").press()
        await until(lambda: isinstance(app.screen, RunsScreen), what="the form closing")
        with seeded.Session() as s:
            job = s.scalar(select(Job).where(Job.name == "from-the-form"))
        assert job is not None and job.status == "queued" and job.dataset == "digits"
        assert json.loads(job.config_json)["epochs"] == 2
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_locked_database_shows_status_line_not_frozen(make_app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from ctxsim.registry import queries
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        real = queries.runs_table

        def locked(*a, **kw):
            raise OperationalError("SELECT", {}, Exception("database is locked"))

        monkeypatch.setattr(queries, "runs_table", locked)
        await refreshed(pilot)
        assert "locked" in scr.status.text and scr.status.has_class("-problem")
        assert len(scr.table.row_keys) == 7  # the last data stays
        await pilot.press("s")  # keys still answered
        assert scr.table.sort_key == "status"
        monkeypatch.setattr(queries, "runs_table", real)
        await refreshed(pilot)
        assert "locked" not in scr.status.text and not scr.status.has_class("-problem")


@sync
async def test_real_sqlite_lock_is_reported(tmp_path):
    """A rollback-journal SQLite file held under an exclusive lock: the read fails within about a
    second and the status line says so."""
    import sqlite3

    from ctxsim.registry.db import open_registry
    from ctxsim.tui.app import CtxsimApp
    from ctxsim.tui.screens.runs import RunsScreen

    path = tmp_path / "locked.db"
    reg = open_registry(path)
    reg.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    app = CtxsimApp(reg, poll_interval=None, load_baselines=False, show_timings=False)
    con.execute("BEGIN EXCLUSIVE")
    try:
        async with app.run_test(size=SIZE) as pilot:
            scr = await settled(pilot, RunsScreen, timeout=30)
            assert "locked" in scr.status.text
    finally:
        con.execute("ROLLBACK")
        con.close()


@sync
async def test_quit_key(make_app):
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, RunsScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code in (0, None)


@sync
async def test_incremental_refresh_sees_evals_deletes_and_full_reload(make_app, seeded, monkeypatch):
    from sqlalchemy import text

    from ctxsim.registry import jobs
    from ctxsim.tui.screens import runs as runs_mod
    from ctxsim.tui.screens.runs import RunsScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        scr = await settled(pilot, RunsScreen)
        await refreshed(pilot)  # from now on polls are incremental
        # an eval point alone (no jobs row update) is found through metrics.id
        sink = RegistrySink(seeded, 1)
        sink.emit(Event("eval", {"epoch": 21, "metrics": {"R@1": 0.75}}, 1.0))
        sink.close()
        await refreshed(pilot)
        assert scr.table.run_rows[1].cells["best"] == "75.0 @21"
        jobs.rm(seeded, 7)
        await refreshed(pilot)
        assert 7 not in scr.table.run_rows and "7" not in scr.table.row_keys
        # a write that bumps neither marker shows when the rolling re-read reaches its job (here: every poll)
        monkeypatch.setattr(runs_mod, "FULL_RELOAD_EVERY", 1)
        with seeded.engine.begin() as c:
            c.execute(text("UPDATE jobs SET name = 'renamed-raw' WHERE id = 5"))
        await refreshed(pilot)
        assert scr.table.run_rows[5].cells["name"] == "renamed-raw"

