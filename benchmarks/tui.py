"""Dashboard responsiveness on a large registry: 1,000 runs x 5,000 metric points each.

    python benchmarks/tui.py [--runs 1000] [--points 5000] [--db /tmp/ctxsim-tui-bench.db] [--repeat 15]
                             [--launches 5] [--no-train]

By default a digits run (``ctxsim run``) trains into the same registry the whole time, as a worker
would: it takes a core and writes metrics every step. ``--no-train`` measures an idle machine.

Measures (median and p95 over ``--repeat``; wall time on this machine, nothing asserted):
  runs refresh, read    the runs screen's thread-worker read (incremental: runs_changes, then only
                        the changed jobs) after the 10 running jobs moved on
                        vs a plain reference: re-read and re-format all 1,000 jobs
  runs refresh, apply   applying it to the 1,000-row table on the UI thread (cells of changed rows)
                        vs a plain reference: compare every row's cells
  runs refresh, total   poll -> thread read -> table updated and status line set, in the running app;
                        includes Textual repainting the visible table rows (any cell update
                        invalidates DataTable's render cache: cost follows the terminal size,
                        not the registry size)
  detail, first open    one run's 5,000 points (all series) read
  detail, poll          the next poll with 40 new points (incremental, SeriesCache)
                        vs a plain reference: re-read every point of the run
  key press             cursor down / sort / search keystroke -> handled, on 1,000 rows;
                        also cursor down while a refresh read runs in its thread
  launch                a new app at 80x24 until its runs table holds every job (``--launches`` times)
  filter                a status chosen in the filter bar -> the table filtered
  detail open / back    Enter on a row -> the detail screen shows its first read (its read runs
                        before the screen is pushed and is applied before the first frame), then
                        also until that frame is laid out and painted; q -> the runs table
Peak memory: tracemalloc peak of the read path and the process's max RSS.
The registry file is built once (SQLite, bulk insert through the ORM's tables) and reused.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, Metric, Summary, Worker

DATASETS = ("cub", "cars", "sop", "inat", "inshop")
LOSSES = ("hybrid", "contrastive", "triplet", "ms_miner", "proxy_anchor", "proxy_nca", "roadmap")
NOW = datetime(2026, 1, 15, 12, 0, 0)


def series_plan(points: int) -> dict[str, int]:
    """How a run's ``points`` split over its series (train steps dominate, evals per epoch)."""
    evals = 25
    train = points - 2 * evals
    return {"train/loss": train // 2, "train/ctx": train // 4, "train/con": train - train // 2 - train // 4,
            "R@1": evals, "MAP@R": evals}


def build(path: Path, runs: int, points: int) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            p.unlink()
    reg = open_registry(path)
    plan = series_plan(points)
    with reg.begin() as s:
        s.add(Worker(id="bench-w1", host="bench", pid=1, gpus="0,1,2,3", started_at=NOW, heartbeat_at=NOW))
    jobs = []
    for i in range(1, runs + 1):
        status = "running" if i > runs - 10 else ("queued" if i > runs - 30 else "done")
        jobs.append({"id": i, "name": f"run-{i}", "dataset": DATASETS[i % 5], "loss": LOSSES[i % 7],
                     "resolution": 256 if i % 2 else 224, "config_json": "{}", "config_hash": f"{i}",
                     "status": status, "epoch": 80 if status == "done" else 40, "total_epochs": 80,
                     "started_at": NOW - timedelta(hours=2), "heartbeat_at": NOW, "gpus": str(i % 4),
                     "worker_id": "bench-w1" if status == "running" else None,
                     "finished_at": NOW if status == "done" else None,
                     "updated_at": NOW - timedelta(hours=1)})
    with reg.engine.begin() as c:
        c.execute(insert(Job.__table__), jobs)
    mt, st = Metric.__table__, Summary.__table__
    for i in range(1, runs + 1):
        rows, summ = [], []
        for key, n in plan.items():
            if key.startswith("train/"):
                vals = [(s_ + 1, 1.5 * math.exp(-s_ / 800) + 0.2 + 0.01 * math.sin(s_ + i)) for s_ in range(n)]
                best = min(vals, key=lambda p: p[1])
            else:
                vals = [(e + 1, 0.4 + 0.3 * (1 - math.exp(-e / 5)) + 0.001 * (i % 50)) for e in range(n)]
                best = max(vals, key=lambda p: p[1])
            rows += [{"job_id": i, "key": key, "step": s_, "value": v, "time": 0.0} for s_, v in vals]
            summ.append({"job_id": i, "key": key, "best": best[1], "best_step": best[0], "last": vals[-1][1],
                         "last_step": vals[-1][0]})
        with reg.engine.begin() as c:
            c.execute(insert(mt), rows)
            c.execute(insert(st), summ)
    reg.dispose()


def ensure_db(path: Path, runs: int, points: int) -> float:
    """Builds the registry unless ``path`` already holds exactly this size; returns build seconds."""
    if path.exists():
        reg = open_registry(path)
        with reg.Session() as s:
            n_jobs = s.scalar(select(func.count()).select_from(Job))
            n_pts = s.scalar(select(func.count()).select_from(Metric))
        reg.dispose()
        if n_jobs == runs and n_pts >= runs * points:  # earlier runs of this benchmark add a few
            return 0.0
    t0 = time.perf_counter()
    build(path, runs, points)
    return time.perf_counter() - t0


def stats(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


class Clock:
    """Wall and process-CPU milliseconds of repeated intervals (CPU: all threads of this process,
    so a shared, oversubscribed machine inflates wall time but not CPU time)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def start(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall.append((time.perf_counter() - self._w) * 1000)
        self.cpu.append((time.process_time() - self._c) * 1000)

    @staticmethod
    def sum(*clocks: "Clock") -> "Clock":
        """Intervals measured back to back, added pairwise."""
        out = Clock()
        out.wall = [sum(w) for w in zip(*(c.wall for c in clocks))]
        out.cpu = [sum(c) for c in zip(*(c.cpu for c in clocks))]
        return out

    def result(self, ref: "Clock | None" = None):
        return (stats(self.wall), statistics.median(self.cpu), stats(ref.wall) if ref else None)


def bump_running(reg, runs: int, step: int) -> None:
    """What a poll interval brings: the 10 running jobs move on (epoch, summaries)."""
    from sqlalchemy import update

    with reg.begin() as s:
        ids = list(range(runs - 9, runs + 1))
        s.execute(update(Job).where(Job.id.in_(ids)).values(epoch=40 + step % 40, last_step=5000 + step))
        s.execute(update(Summary).where(Summary.job_id.in_(ids), Summary.key == "train/loss")
                  .values(last=0.2 + 0.001 * (step % 97), last_step=5000 + step))


async def bench_app(reg, runs: int, repeat: int, out: dict) -> None:
    from ctxsim.tui.app import CtxsimApp
    from ctxsim.tui.screens.runs import RunsScreen

    app = CtxsimApp(reg, clock=lambda: NOW, poll_interval=None, label="bench", load_baselines=False)
    async with app.run_test(size=(180, 50)) as pilot:
        async def wait_loads(scr, n):
            while scr.loads < n:
                await asyncio.sleep(0.002)

        scr = app.screen
        while not isinstance(scr, RunsScreen):
            await asyncio.sleep(0.01)
            scr = app.screen
        await wait_loads(scr, 1)
        await pilot.pause()
        table = scr.table
        for _ in range(500):  # the first RunsLoaded is applied after the load's status message
            if len(table.row_keys) == runs:
                break
            await pilot.pause()
        assert len(table.row_keys) == runs, len(table.row_keys)

        # refresh: read in the thread, apply on the UI thread
        from ctxsim.registry import queries
        from ctxsim.tui.format import run_row

        read, apply, total = Clock(), Clock(), Clock()
        read_full, apply_full = Clock(), Clock()
        posted = []
        real_post = scr.post_message

        def capture(msg):  # - keep the RunsLoaded for the apply measurement
            posted.append(msg)
            return True

        for k in range(repeat):
            bump_running(reg, runs, k)
            posted.clear()
            scr.post_message = capture
            try:
                read.start()
                scr.load()  # what the screen's thread worker runs each poll
                read.stop()
            finally:
                scr.post_message = real_post
            msg = posted[-1]
            apply.start()
            table.set_rows(msg.rows, msg.changed)
            apply.stop()
            await pilot.pause()
        # plain reference: re-read and re-format every job, compare every row
        for k in range(repeat):
            bump_running(reg, runs, 50 + k)
            read_full.start()
            jobs = queries.runs_table(app.read_reg, summary_keys=("R@1", "MAP@R", "train/loss"))
            queries.workers_table(app.read_reg)
            rows = [run_row(j, scr._cache.paper, NOW, app.stale_after_s) for j in jobs]
            read_full.stop()
            apply_full.start()
            table.set_rows(rows)
            apply_full.stop()
            await pilot.pause()
        for k in range(repeat):
            bump_running(reg, runs, 100 + k)
            n = scr.loads
            total.start()
            app.action_refresh_now()
            await wait_loads(scr, n + 1)
            total.stop()
            await pilot.pause()
        out["runs refresh, read (thread)"] = read.result(read_full)
        out["runs refresh, apply (UI thread)"] = apply.result(apply_full)
        out["runs refresh, total (poll -> table updated)"] = total.result()

        # key presses: the key goes in through the driver like a keyboard's, and the clock stops
        # when its effect is there (the handler ran on the UI thread); painting follows on the
        # next screen update
        from textual import events

        async def press(key: str, done, n: int, before=None) -> Clock:
            c = Clock()
            for _ in range(n):
                if before is not None:
                    before()
                state = done(None)
                c.start()
                app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
                while not done(state):
                    await asyncio.sleep(0)
                c.stop()
                await pilot.pause()
            return c

        def changed(attr):
            """A probe for press(): the attribute's value first, then whether it moved away from it."""
            return lambda prev: attr() if prev is None else attr() != prev

        row = changed(lambda: table.cursor_row)
        sort = changed(lambda: table.sort_key)
        text = changed(lambda: table.filter.text)
        out["key: cursor down"] = (await press("down", row, repeat)).result()
        out["key: sort (s, reorders 1,000 rows)"] = (await press("s", sort, repeat)).result()
        in_flight = []

        def start_read() -> None:
            app.action_refresh_now()
            in_flight.append(scr._in_flight)

        out["key: cursor down during a refresh read"] = (await press("down", row, repeat, start_read)).result()
        while scr._in_flight:
            await asyncio.sleep(0.01)
        table.sort_by("id", reverse=True)
        await pilot.press("slash")
        out["key: search keystroke (filters 1,000 rows)"] = (await press("9", text, repeat)).result()
        out["_reads_in_flight"] = sum(in_flight)
        await pilot.press("escape")
        table.focus()

        # a status filter chosen (the Select's value set, as a click or Enter does): filter applied
        from textual.widgets import Select

        status_select = scr.query_one("#f-status", Select)
        filt = Clock()
        for k in range(repeat):
            want = ("done", "queued")[k % 2]
            filt.start()
            status_select.value = want
            while table.filter.status != want:
                await asyncio.sleep(0)
            filt.stop()
            await pilot.pause()
        status_select.clear()
        await pilot.pause()
        out["filter: choose a status (1,000 rows)"] = filt.result()

        # open a run's detail (Enter: the screen is up and its first read is shown) and go back (q)
        from ctxsim.tui.screens.detail import DetailScreen

        opened, painted, back, settled = Clock(), Clock(), Clock(), Clock()
        for k in range(repeat):
            table.focus()
            table.move_to_key(str(runs - k % 10))
            await pilot.pause()
            opened.start()
            app._driver.send_message(events.Key("enter", "\r"))
            while not (isinstance(app.screen, DetailScreen) and app.screen.loads >= 1):
                await asyncio.sleep(0)
            opened.stop()
            painted.start()
            await pilot.pause()  # its layout and first full paint (the read's data is in it)
            painted.stop()
            back.start()
            app._driver.send_message(events.Key("q", "q"))
            while not isinstance(app.screen, RunsScreen):
                await asyncio.sleep(0)
            back.stop()
            settled.start()
            await pilot.pause()  # the runs screen's resume: its layout and repaint of the table
            settled.stop()
        out["detail: open (Enter -> first read shown)"] = opened.result()
        out["detail: open, then the app idle (painted)"] = Clock.sum(opened, painted).result()
        out["detail: back (q -> runs table)"] = back.result()
        out["detail: back, then the app idle (repainted)"] = Clock.sum(back, settled).result()


async def bench_launch(reg, runs: int, launches: int, out: dict) -> None:
    """Launch -> the runs table holds every job (a new app each time, as ``ctxsim tui`` starts)."""
    from ctxsim.tui.app import CtxsimApp
    from ctxsim.tui.screens.runs import RunsScreen

    first = Clock()
    for _ in range(launches):
        first.start()
        app = CtxsimApp(reg, clock=lambda: NOW, poll_interval=None, label="bench", load_baselines=False)
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 120
            while not (isinstance(app.screen, RunsScreen) and len(app.screen.table.row_keys) == runs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"launch: the table never held {runs} rows "
                                       f"(has {len(getattr(app.screen, 'table', None).row_keys) if isinstance(app.screen, RunsScreen) else '-'}); "
                                       f"status: {getattr(getattr(app.screen, 'status', None), 'text', '')}")
                await asyncio.sleep(0.001)
            first.stop()
            await pilot.pause()
    out["launch: first rows (80x24, every job in the table)"] = first.result()


def count_jobs(reg) -> int:
    with reg.Session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def start_training(db: Path) -> "subprocess.Popen | None":
    """A worker's load while measuring: ``ctxsim run`` training digits into the same registry."""
    import tempfile

    argv = [sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "digits", "-l", "hybrid", "--epochs", "100000",
            "--device", "cpu", "--fresh", "--name", "bench-trainer", "--db", str(db),
            "--run-dir", tempfile.mkdtemp(prefix="ctxsim-tui-bench-run-")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # past its imports: training (and writing metrics) from here on
    return proc if proc.poll() is None else None


def bench_detail(reg, runs: int, repeat: int, out: dict) -> None:
    from ctxsim.registry import queries
    from ctxsim.registry.db import read_registry
    from ctxsim.registry.sink import RegistrySink
    from ctxsim.train.events import Event
    from ctxsim.tui.data import SeriesCache

    ro = read_registry(reg)
    job = runs  # a running job
    first, inc, plain = Clock(), Clock(), Clock()
    for _ in range(repeat):
        first.start()
        cache = SeriesCache(job)
        cache.update(ro, queries.job_detail(ro, job)["summaries"])
        first.stop()
    step0 = max(p[0] for p in cache.points["train/loss"])
    for k in range(repeat):
        sink = RegistrySink(reg, job)
        for j in range(40):
            st = step0 + k * 40 + j + 1
            sink.emit(Event("step", {"epoch": 41, "step": st, "loss": 0.2, "terms": {"ctx": 0.1, "con": 0.1}}))
        sink.close()
        inc.start()
        n = cache.update(ro, queries.job_detail(ro, job)["summaries"])
        inc.stop()
        assert n == 120, n
        plain.start()
        queries.job_detail(ro, job)
        queries.metric_series(ro, job)
        plain.stop()
    out["detail: first open (5,000 points)"] = first.result()
    out["detail: poll with 40 new steps"] = inc.result(plain)
    ro.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--db", default="/tmp/ctxsim-tui-bench.db")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--launches", type=int, default=5)
    ap.add_argument("--no-train", dest="train", action="store_false",
                    help="measure on an idle machine (default: a digits run trains into the registry meanwhile)")
    a = ap.parse_args()
    path = Path(a.db)
    built = ensure_db(path, a.runs, a.points)
    size_mb = path.stat().st_size / 2**20
    print(f"registry {path}: {a.runs} runs x {a.points} points ({size_mb:.0f} MiB)"
          + (f", built in {built:.0f} s" if built else ", reused"))
    reg = open_registry(path)
    out: dict = {}
    trainer = start_training(path) if a.train else None
    if a.train:
        print("a digits run trains into the same registry meanwhile" if trainer else "the training run did not start")
    n_jobs = count_jobs(reg)  # the benchmark's runs, and the trainer's (and earlier trainers') jobs
    try:
        print("detail reads...", file=sys.stderr)
        bench_detail(reg, a.runs, a.repeat, out)
        print("launches...", file=sys.stderr)
        asyncio.run(bench_launch(reg, n_jobs, a.launches, out))
        print("refresh, keys, filter, detail...", file=sys.stderr)
        asyncio.run(bench_app(reg, n_jobs, a.repeat, out))
    finally:
        if trainer is not None:
            trainer.terminate()
            trainer.wait(timeout=60)
    # memory in a separate pass: tracemalloc slows Python down and would distort the timings
    tracemalloc.start()
    bench_detail(reg, a.runs, 1, {})
    detail_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
    from ctxsim.baselines import paper as reference_numbers
    from ctxsim.registry import queries
    from ctxsim.registry.db import read_registry
    from ctxsim.tui.format import run_row

    ro = read_registry(reg)
    rows = [run_row(j, reference_numbers.paper_numbers(ro), NOW) for j in queries.runs_table(ro)]
    runs_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    ro.dispose()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{'measure':46s} {'wall med':>9s} {'wall p95':>9s} {'CPU med':>8s} {'plain ref':>10s} {'ratio':>6s}   (ms)")
    in_flight = out.pop("_reads_in_flight")
    for name, ((med, p95), cpu, ref) in out.items():
        ref_s = f"{ref[0]:10.1f} {ref[0] / med:5.1f}x" if ref else f"{'':10s} {'':>6s}"
        print(f"{name:46s} {med:9.1f} {p95:9.1f} {cpu:8.1f} {ref_s}")
    print(f"(a read was in flight in its thread for {in_flight} of the 'during a refresh read' presses)")
    print(f"\npeak traced memory: detail read {detail_peak:.1f} MiB, runs read+format ({len(rows)} rows) {runs_peak:.1f} MiB;"
          f" max RSS {rss:.0f} MiB")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    reg.dispose()


if __name__ == "__main__":
    main()
