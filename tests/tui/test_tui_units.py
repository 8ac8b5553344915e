"""Unit tests of the dashboard's pure parts: formatting, filtering, incremental reads, log follow,
overrides parsing, the read-only engine, the new queries, and the `ctxsim tui` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tui_seed import FIXED_NOW

from ctxsim.baselines import paper as reference_numbers
from ctxsim.errors import ConfigError
from ctxsim.registry import queries
from ctxsim.registry.db import read_registry
from ctxsim.registry.sink import RegistrySink
from ctxsim.runner.logs import LogFollower
from ctxsim.train.events import Event
from ctxsim.tui import format as F
from ctxsim.tui.actions import build_config, change_priority, parse_overrides
from ctxsim.tui.data import SeriesCache


def test_durations_and_floats():
    assert [F.fmt_duration(s) for s in (0, 59, 61, 3600 + 120, 86400 * 2 + 3600)] == ["0s", "59s", "1m01s", "1h02m", "2d01h"]
    assert F.fmt_duration(None) == ""
    assert F.fmt_float(0.5) == "0.5" and F.fmt_float(1.23456) == "1.2346" and F.fmt_float(float("nan")) == "nan"


def _job(**kw):
    d = {"id": 1, "name": "n", "dataset": "cub", "loss": "hybrid", "resolution": 256, "status": "running",
         "epoch": 3, "total_epochs": 10, "gpus": "0", "tags": ["a"], "started_at": FIXED_NOW - timedelta(minutes=5),
         "finished_at": None, "heartbeat_at": FIXED_NOW - timedelta(seconds=10),
         "summaries": {"R@1": {"best": 0.70, "best_step": 2, "last": 0.69, "last_step": 3},
                       "train/loss": {"best": 0.4, "best_step": 30, "last": 0.45, "last_step": 30}}}
    d.update(kw)
    return d


def test_run_row_delta_uses_percent_and_paper_key():
    paper = {("cub", "hybrid", 256, "R@1"): {"value": 68.7, "kind": "reference_log", "source": "s"}}
    r = F.run_row(_job(), paper, FIXED_NOW, 90)
    assert r.cells["best"] == "70.0 @2" and r.cells["delta"].plain == "+1.3" and r.cells["progress"] == "3/10"
    assert r.cells["elapsed"] == "5m00s" and not r.stale
    r2 = F.run_row(_job(resolution=224), paper, FIXED_NOW, 90)  # no 224 number: no delta
    assert r2.cells["delta"].plain == "–" and r2.sort["delta"] == float("-inf")
    stale = F.run_row(_job(heartbeat_at=FIXED_NOW - timedelta(minutes=5)), paper, FIXED_NOW, 90)
    assert stale.stale and str(stale.cells["status"]) == "running?"


def test_filter_and_order():
    rows = [F.run_row(_job(id=i, dataset=d, loss=lo, status=st, name=f"run{i}"), {}, FIXED_NOW, 90)
            for i, d, lo, st in ((1, "cub", "hybrid", "done"), (2, "cars", "triplet", "running"),
                                 (3, "cub", "triplet", "failed"))]
    assert [r.id for r in F.order_rows(rows, F.RunFilter())] == [3, 2, 1]
    assert [r.id for r in F.order_rows(rows, F.RunFilter(dataset="cub"))] == [3, 1]
    assert [r.id for r in F.order_rows(rows, F.RunFilter(loss="triplet", status="failed"))] == [3]
    assert [r.id for r in F.order_rows(rows, F.RunFilter(text="RUN2"))] == [2]
    assert [r.id for r in F.order_rows(rows, F.RunFilter(), "dataset", reverse=False)] == [2, 3, 1]


def test_decimate_and_groups():
    pts = [(i, float(i)) for i in range(1000)]
    d = F.decimate(pts, 50)
    assert len(d) == 50 and d[0] == (0, 0.0) and d[-1] == (999, 999.0)
    assert F.decimate(pts[:10], 50) == pts[:10]
    loss, ev = F.series_groups(["train/lr", "train/ctx", "train/loss", "epoch/loss", "R@10", "R@2", "MAP@R", "RP"])
    assert loss == ["train/loss", "train/ctx", "epoch/loss"] and ev == ["R@2", "R@10", "MAP@R", "RP"]


def test_series_cache_is_incremental_across_step_scales(registry):
    from ctxsim.registry.models import Job

    with registry.begin() as s:
        s.add(Job(id=1, dataset="cub", loss="hybrid", config_json="{}", config_hash="h", status="running"))
    sink = RegistrySink(registry, 1)
    for st in range(1, 101):
        sink.emit(Event("step", {"epoch": 1, "step": st, "loss": 1.0 / st, "terms": {}}))
    sink.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.5}}))
    sink.close()
    cache = SeriesCache(1)
    summ = queries.job_detail(registry, 1)["summaries"]
    assert cache.update(registry, summ) == 101
    assert cache.update(registry, queries.job_detail(registry, 1)["summaries"]) == 0  # nothing new
    sink = RegistrySink(registry, 1)
    sink.emit(Event("step", {"epoch": 2, "step": 101, "loss": 0.001, "terms": {}}))
    sink.emit(Event("eval", {"epoch": 2, "metrics": {"R@1": 0.6}}))  # step 2 < held train step 100
    sink.close()
    assert cache.update(registry, queries.job_detail(registry, 1)["summaries"]) == 2
    assert cache.points["R@1"] == [(1, 0.5), (2, 0.6)] and len(cache.points["train/loss"]) == 101


def test_log_follower_tail_partial_and_truncation(tmp_path):
    p = tmp_path / "stdout.log"
    f = LogFollower(p)
    assert f.read() == ([], False)  # no file yet
    p.write_text("a\nb\npart")
    assert f.read() == (["a", "b"], False)
    with open(p, "a") as fh:
        fh.write("ial\nc\n")
    assert f.read() == (["partial", "c"], False)
    p.write_text("new\n")  # truncated and rewritten
    assert f.read() == (["new"], True)
    big = tmp_path / "big.log"
    big.write_text("".join(f"line {i}\n" for i in range(20000)))
    lines, _ = LogFollower(big, tail_bytes=1000).read()
    assert lines[-1] == "line 19999" and len(lines) < 200 and lines[0].startswith("line ")


def test_read_registry_cannot_write(registry):
    ro = read_registry(registry)
    with ro.Session() as s:
        assert s.execute(text("select count(*) from jobs")).scalar() == 0
        with pytest.raises(OperationalError, match="readonly|read-only|query_only|attempt to write"):
            s.execute(text("delete from jobs"))
    ro.dispose()


def test_overrides_and_config_validation():
    assert parse_overrides("epochs=2, lr=1e-4 name='a b'") == ["epochs=2", "lr=1e-4", "name=a b"]
    with pytest.raises(ConfigError):
        parse_overrides("epochs")
    cfg = build_config("digits", "hybrid", 256, "epochs=3")
    assert cfg.epochs == 3
    with pytest.raises(ConfigError, match="no_such"):
        build_config("digits", "hybrid", 256, "no_such=1")
    with pytest.raises(ConfigError):
        build_config("nope", "hybrid", 256)


def test_priority_only_for_queued(seeded):
    assert change_priority(seeded, 5, +3) == "job 5: priority 3"
    assert queries.queue_table(seeded)[2]["id"] == 4  # 4 (prio 5) still ahead of 5 (prio 3)
    assert change_priority(seeded, 5, +3) == "job 5: priority 6"
    assert [j["id"] for j in queries.queue_table(seeded) if j["status"] == "queued"] == [5, 4]
    from ctxsim.errors import CtxsimError

    with pytest.raises(CtxsimError, match="only queued"):
        change_priority(seeded, 1, 1)


def test_paper_queries(seeded):
    nums = reference_numbers.paper_numbers(seeded)
    ref = nums[("cub", "hybrid", 256, "R@1")]
    assert ref["kind"] == "reference_log" and abs(ref["value"] - 68.687) < 1e-9
    assert nums[("cub", "ms_miner", 224, "R@1")]["method"] == "MS+miner"
    assert reference_numbers.paper_number(seeded, "cars", "roadmap", 224)["value"] == pytest.approx(83.4)
    curve = reference_numbers.paper_curve(seeded, "cub", "hybrid", 256)
    assert curve[0] == (5, pytest.approx(63.9)) and curve == sorted(curve) and len(curve) == 16
    assert reference_numbers.paper_curve(seeded, "cub", "triplet", 256) == []


def test_workers_and_events_queries(seeded):
    ws = queries.workers_table(seeded)
    assert [w["id"] for w in ws] == ["gpu01-w1", "gpu02-w1"] and ws[0]["jobs"] == [2] and ws[1]["jobs"] == [6]
    ev = queries.job_events(seeded, 3)
    assert ev[-1]["kind"] == "failed"
    q = queries.queue_table(seeded, recent_finished=5)
    assert [j["id"] for j in q][:4] == [2, 6, 4, 5] and {j["id"] for j in q[4:]} == {3, 7}


def _registry(path):
    from ctxsim.registry.db import open_registry

    open_registry(path).dispose()
    return path


def test_cli_tui_refuses_without_terminal(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "tui", "--db", str(_registry(tmp_path / "x.db"))],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2 and "interactive terminal" in r.stderr and "Traceback" not in r.stderr


def test_cli_tui_missing_registry_is_one_line_and_creates_nothing(tmp_path):
    target = tmp_path / "typo" / "dir" / "x.db"
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "tui", "--db", f"sqlite:///{target}"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode != 0 and str(target) in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "typo").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for line in open(name).read().splitlines()[1:]:
            parts = line.split()
            addr, st = parts[1], parts[3]
            ip_hex, port_hex = addr.split(":")
            if st == "0A" and int(port_hex, 16) == port:
                out.add(ip_hex)
    return out


def test_cli_tui_serve_binds_loopback_only(tmp_path):
    pytest.importorskip("textual_serve")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ctxsim.cli.main", "tui", "--serve", "--port", str(port),
                             "--db", str(_registry(tmp_path / "s.db"))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert body is not None and "ctxsim" in body
        addrs = _listening_addresses(port)
        assert addrs and addrs <= {"0100007F"}, addrs  # 127.0.0.1 only, nothing on 0.0.0.0 / ::
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_where_running_shows_host_and_gpus():
    from ctxsim.tui.format import where_running

    assert where_running({"worker_host": "node-a", "gpus": "0,1"}) == "node-a:0,1"
    assert where_running({"worker_host": "node-b", "gpus": None}) == "node-b"
    assert where_running({"worker_host": None, "gpus": "2"}) == ":2"
    assert where_running({}) == ""


def test_queue_lists_a_job_once_when_it_ends_during_the_read(seeded):
    """A job cancelled while the queue is being read is listed once (the dashboard's table keys
    rows by id: a duplicate crashed it). The cancel lands right after the first statement."""
    from sqlalchemy import event, update

    from ctxsim.registry.models import Job

    fired = []

    def cancel_after_first(conn, cursor, statement, params, context, executemany):
        if fired or "FROM jobs" not in statement:
            return
        fired.append(statement)
        with seeded.engine.connect() as other:
            other.execute(update(Job).where(Job.id == 2).values(status="cancelled"))
            other.commit()

    ro = read_registry(seeded)  # the dashboard's reader: no transaction spans two statements
    event.listen(ro.engine, "after_cursor_execute", cancel_after_first)
    try:
        ids = [j["id"] for j in queries.queue_table(ro, recent_finished=5)]
    finally:
        event.remove(ro.engine, "after_cursor_execute", cancel_after_first)
        ro.dispose()
    assert fired and len(ids) == len(set(ids)), ids


def test_runs_cache_reads_incrementally_without_textual(seeded):
    """The runs screen's cache (ctxsim.tui.data.RunsCache) on its own: a first full read, then only
    what changed, a removed job gone, and the status-line facts (counts, dead worker, stale job)."""
    from ctxsim.registry import jobs
    from ctxsim.runner.probe import probe_config
    from ctxsim.tui.data import RunsCache

    ro = read_registry(seeded)
    cache = RunsCache()
    first = cache.refresh(ro, FIXED_NOW, 60.0)
    ids = {r.id for r in first.rows}
    assert first.changed is None and ids == set(cache.jobs) and len(ids) >= 5
    assert sum(first.counts.values()) == len(ids) and first.counts.get("running", 0) >= 1
    assert "worker gpu02-w1 dead (no heartbeat)" in first.warnings
    assert cache.rows[1].cells["dataset"] == "cub" and cache.rows[1].cells["loss"] == "hybrid"

    calm = cache.refresh(ro, FIXED_NOW, 60.0)  # incremental now (rows written in the last 5 s are re-read)
    assert calm.changed is not None and {r.id for r in calm.rows} == ids

    new = jobs.enqueue(seeded, probe_config(label="fresh"))
    sink = RegistrySink(seeded, 1)
    sink.emit(Event("eval", {"epoch": 21, "metrics": {"R@1": 0.75}}, 1.0))
    sink.close()
    grown = cache.refresh(ro, FIXED_NOW, 60.0)
    assert {new, 1} <= grown.changed and cache.rows[1].cells["best"] == "75.0 @21"
    assert new in {r.id for r in grown.rows} and grown.counts["queued"] == first.counts.get("queued", 0) + 1

    jobs.rm(seeded, new)
    shrunk = cache.refresh(ro, FIXED_NOW, 60.0)
    assert new not in {r.id for r in shrunk.rows} and new not in cache.jobs


def test_the_dashboards_read_handle_never_writes(tmp_path):
    """A registry whose shipped reference numbers were never loaded: the read handle is read-only, so
    the runs read leaves loading them to a writer instead of failing (query_only) with no rows."""
    from sqlalchemy import select

    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Meta
    from ctxsim.runner.probe import probe_config
    from ctxsim.tui.data import RunsCache

    reg = open_registry(tmp_path / "e.db")
    jid = jobs.enqueue(reg, probe_config(label="x"))
    with reg.Session() as s:
        assert s.scalar(select(Meta.value).where(Meta.key == "baselines_shipped_sha")) is None
    ro = read_registry(reg)
    assert ro.readonly
    assert [r.id for r in RunsCache().refresh(ro, FIXED_NOW, 60.0).rows] == [jid]
    reg.dispose()


def test_reference_cache_reads_once_until_invalidated_or_old(seeded, monkeypatch):
    """The paper's numbers and curves shared by the detail and compare screens: one read each, again
    after invalidate() (numbers loaded) or once older than max_age_s; values equal a direct read."""
    from ctxsim.tui.data import ReferenceCache

    ro = read_registry(seeded)
    calls = {"numbers": 0, "curve": 0}
    real_numbers, real_curve = reference_numbers.paper_numbers, reference_numbers.paper_curve

    def numbers(reg):
        calls["numbers"] += 1
        return real_numbers(reg)

    def curve(reg, *key):
        calls["curve"] += 1
        return real_curve(reg, *key)

    monkeypatch.setattr(reference_numbers, "paper_numbers", numbers)
    monkeypatch.setattr(reference_numbers, "paper_curve", curve)
    now = [0.0]
    cache = ReferenceCache(max_age_s=60.0, clock=lambda: now[0])
    assert cache.numbers(ro) == real_numbers(ro) and cache.numbers(ro) is cache.numbers(ro)
    assert cache.curve(ro, "cub", "hybrid", 224) == real_curve(ro, "cub", "hybrid", 224)
    cache.curve(ro, "cub", "hybrid", 224)
    cache.curve(ro, "cars", "hybrid", 224)
    assert calls == {"numbers": 1, "curve": 2}
    cache.invalidate()
    cache.numbers(ro)
    cache.curve(ro, "cub", "hybrid", 224)
    assert calls == {"numbers": 2, "curve": 3}
    now[0] = 61.0
    cache.numbers(ro)
    assert calls["numbers"] == 3
