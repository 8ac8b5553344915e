"""Registry: migrations, refusal of bad databases, enqueue/claim/reap/cancel/retry/rm, the sink."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from registry_helpers import pg_schema_url
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from ctxsim.errors import RegistryError
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry, retry_db
from ctxsim.registry.migrations import VERSION_TABLE, head_revision
from ctxsim.registry.models import SCHEMA_VERSION, Job, JobEvent, Meta, Metric, Summary, utcnow
from ctxsim.registry.queries import metric_series
from ctxsim.registry.sink import RegistrySink
from ctxsim.runner.probe import probe_config
from ctxsim.train.events import Event


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ migrations and bad databases


def _make_v1(path) -> None:
    """Turns a fresh registry file into what ctxsim with schema v1 wrote (no updated_at column)."""
    reg = open_registry(path)
    jobs.enqueue(reg, probe_config(label="old"))
    with reg.engine.begin() as c:
        c.execute(text("DROP INDEX ix_jobs_updated_at"))
        c.execute(text("DROP INDEX ix_jobs_status_heartbeat"))
        c.execute(text("ALTER TABLE jobs DROP COLUMN updated_at"))
        c.execute(text("ALTER TABLE events DROP COLUMN payload"))
        c.execute(text(f"DROP TABLE {VERSION_TABLE}"))  # v1 came before Alembic
        c.execute(update(Meta).where(Meta.key == "schema_version").values(value="1"))
    reg.dispose()


def test_fresh_registry_is_current_version(registry):
    with registry.Session() as s:
        assert s.scalar(select(Meta.value).where(Meta.key == "schema_version")) == str(SCHEMA_VERSION)
    assert registry.engine.dialect.name == "sqlite"
    with registry.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_older_file_is_backed_up_then_upgraded(tmp_path):
    db = tmp_path / "experiments.db"
    _make_v1(db)
    reg = open_registry(db)
    baks = list(tmp_path.glob("experiments.db.bak-v1-*"))
    assert len(baks) == 1
    with reg.Session() as s:
        assert s.scalar(select(Meta.value).where(Meta.key == "schema_version")) == str(SCHEMA_VERSION)
        job = s.scalar(select(Job))
        assert job.updated_at is not None  # backfilled from created_at
    # the backup is the v1 database, intact
    import sqlite3

    con = sqlite3.connect(baks[0])
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    assert "updated_at" not in [r[1] for r in con.execute("PRAGMA table_info(jobs)")]
    assert con.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    con.close()
    reg.dispose()
    open_registry(db).dispose()  # opening again: nothing more to do, no second backup
    assert len(list(tmp_path.glob("experiments.db.bak-v1-*"))) == 1


def test_newer_schema_is_refused_and_nothing_written(tmp_path):
    db = tmp_path / "experiments.db"
    reg = open_registry(db)
    with reg.begin() as s:
        s.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION + 5)))
    reg.dispose()
    before = _sha(db)
    with pytest.raises(RegistryError) as e:
        open_registry(db)
    msg = str(e.value)
    assert f"schema v{SCHEMA_VERSION + 5}, newer than this ctxsim (v{SCHEMA_VERSION}); upgrade ctxsim" in msg
    assert "\n" not in msg
    assert _sha(db) == before
    assert not list(tmp_path.glob("*.bak-*"))


FIXTURE_V2 = Path(__file__).parent / "fixtures" / "registry-v2.db"


def test_registry_written_by_v2_code_is_backed_up_and_upgraded(tmp_path):
    """tests/fixtures/registry-v2.db was written by ctxsim before Alembic (schema v2): 3 jobs (two done
    through the sink), metrics, summaries, events and baselines. Opening it stamps and upgrades it."""
    db = tmp_path / "experiments.db"
    shutil.copy(FIXTURE_V2, db)
    reg = open_registry(db)
    (bak,) = tmp_path.glob("experiments.db.bak-v2-*")
    import sqlite3

    con = sqlite3.connect(bak)  # the backup is the v2 registry as it was
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    assert "payload" not in [r[1] for r in con.execute("PRAGMA table_info(events)")]
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 11
    con.close()
    with reg.engine.connect() as c:
        assert c.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == head_revision()
        cols = {r[1] for r in c.exec_driver_sql("PRAGMA table_info(events)")}
    assert "payload" in cols
    with reg.Session() as s:
        assert s.scalar(select(Meta.value).where(Meta.key == "schema_version")) == str(SCHEMA_VERSION)
        assert [j.status for j in s.scalars(select(Job).order_by(Job.id))] == ["done", "done", "queued"]
        assert s.scalar(select(func.count()).select_from(Metric)) == 8
        assert s.scalar(select(func.count()).select_from(Summary)) == 4
        events = s.scalars(select(JobEvent).order_by(JobEvent.id)).all()
        assert len(events) == 11 and all(e.payload is None for e in events)  # written before payloads
        done = [e.message for e in events if e.kind == "done" and "selected" in e.message]
        assert done[1] == "R@1=0.6200 MAP@R=0.2200 selected=best selected_on=test best_epoch=2"
    # old rows say nothing structured: compare treats their selection as unknown, never parses text
    from ctxsim.report.compare import gather_runs

    runs = gather_runs(reg, ids=[1, 2])
    assert [r["done"] for r in runs] == [None, None]
    # the upgraded file is a normal registry: new events carry payloads, new jobs are claimed
    jid = jobs.enqueue(reg, probe_config(label="after upgrade"))
    jobs.set_priority(reg, jid, 5)
    with reg.Session() as s:
        ev = s.scalars(select(JobEvent).where(JobEvent.job_id == jid, JobEvent.kind == "priority")).one()
        assert ev.payload == {"previous": 0, "priority": 5}
    reg.dispose()
    open_registry(db).dispose()  # at the head: no second backup
    assert len(list(tmp_path.glob("experiments.db.bak-*"))) == 1


def test_unknown_alembic_revision_is_refused(tmp_path):
    db = tmp_path / "experiments.db"
    reg = open_registry(db)
    with reg.engine.begin() as c:
        c.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'v99'"))
    reg.dispose()
    before = _sha(db)
    with pytest.raises(RegistryError, match="schema revision v99, newer than this ctxsim") as e:
        open_registry(db)
    assert "\n" not in str(e.value) and _sha(db) == before
    assert not list(tmp_path.glob("*.bak-*"))


def _schema_diff(url: str) -> list:
    """What differs between the schema the Alembic revisions built at ``url`` and models.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ctxsim.registry.models import Base

    reg = open_registry(url)
    try:
        with reg.engine.connect() as c:
            ctx = MigrationContext.configure(c, opts={"version_table": VERSION_TABLE})
            return compare_metadata(ctx, Base.metadata)
    finally:
        reg.dispose()


def test_revisions_build_exactly_the_models_schema_sqlite(tmp_path):
    assert _schema_diff(str(tmp_path / "experiments.db")) == []


@pytest.mark.postgres
def test_revisions_build_exactly_the_models_schema_postgres(pg_url):
    with pg_schema_url(pg_url) as url:
        assert _schema_diff(url) == []


@pytest.mark.postgres
def test_postgres_v2_registry_is_stamped_and_upgraded(pg_url):
    """A PostgreSQL registry of schema v2 (no Alembic table, no events.payload) upgrades in place."""
    with pg_schema_url(pg_url) as url:
        reg = open_registry(url)
        jid = jobs.enqueue(reg, probe_config(label="old"))
        with reg.engine.begin() as c:
            c.execute(text("ALTER TABLE events DROP COLUMN payload"))
            c.execute(text(f"DROP TABLE {VERSION_TABLE}"))
            c.execute(update(Meta).where(Meta.key == "schema_version").values(value="2"))
        reg.dispose()
        reg = open_registry(url)
        with reg.Session() as s:
            assert s.scalar(select(Meta.value).where(Meta.key == "schema_version")) == str(SCHEMA_VERSION)
            assert [e.payload for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid))] == [None]
        jobs.set_priority(reg, jid, 2)
        with reg.engine.connect() as c:
            assert c.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == head_revision()
        reg.dispose()


def test_read_only_file_is_refused(tmp_path):
    db = tmp_path / "experiments.db"
    open_registry(db).dispose()
    os.chmod(db, 0o444)
    before = _sha(db)
    try:
        with pytest.raises(RegistryError, match="read-only"):
            open_registry(db)
        assert _sha(db) == before
    finally:
        os.chmod(db, 0o644)


def test_unreachable_server_one_line_without_password():
    with pytest.raises(RegistryError) as e:
        open_registry("postgresql+psycopg://alice:s3cretpw@127.0.0.1:1/nowhere?connect_timeout=2")
    msg = str(e.value)
    assert "s3cretpw" not in msg and "\n" not in msg
    assert "cannot open registry postgresql+psycopg://alice:***@127.0.0.1:1/nowhere" in msg


def test_retry_db_retries_locked_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return "ok"

    assert retry_db(flaky) == "ok" and len(calls) == 3

    def always_locked():
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    with pytest.raises(RegistryError, match="still locked"):
        retry_db(always_locked, timeout_s=0.05)


# ------------------------------------------------------------------ queue


def test_enqueue_dedupes_and_records_provenance(registry):
    a = jobs.enqueue(registry, probe_config(label=1), tags=["x", "y"])
    assert jobs.enqueue(registry, probe_config(label=1)) == a
    b = jobs.enqueue(registry, probe_config(label=1), force=True)
    assert b != a
    with registry.Session() as s:
        job = s.get(Job, a)
        assert job.status == "queued" and Path(job.run_dir).name.endswith(f"-job{a}")  # ctxsim.registry.rundirs
        assert job.versions_json and '"python"' in job.versions_json
        assert job.git_commit is None or len(job.git_commit) == 40
        assert sorted(t.tag for t in job.tags) == ["x", "y"]
    explicit = jobs.enqueue(registry, probe_config(label=2), run_dir=registry.sqlite_path.parent / "mine")
    with registry.Session() as s:
        assert s.get(Job, explicit).run_dir == str(registry.sqlite_path.parent / "mine")
    # a finished job no longer blocks an identical one
    jobs.cancel(registry, a)
    jobs.cancel(registry, b)
    assert jobs.enqueue(registry, probe_config(label=1)) not in (a, b)


def _queue(reg, specs):
    return [jobs.enqueue(reg, probe_config(label=i), priority=p, n_gpus=g, executor=ex)
            for i, (p, g, ex) in enumerate(specs)]


def test_claim_order_gpus_and_executor(registry):
    ids = _queue(registry, [(0, 0, "local"), (5, 2, "local"), (5, 1, "local"), (9, 0, "foreground"), (1, 0, "slurm")])
    c = jobs.claim(registry, "w1", free_gpus=["3", "5", "7"])
    assert c.id == ids[1] and c.gpus == ["3", "5"] and c.attempt == 1  # priority 5, oldest first
    c = jobs.claim(registry, "w1", free_gpus=["7"])
    assert c.id == ids[2] and c.gpus == ["7"]
    assert jobs.claim(registry, "w1", free_gpus=[], executors=("slurm",)).id == ids[4]
    c = jobs.claim(registry, "w1", free_gpus=[])
    assert c.id == ids[0] and c.gpus == []
    assert jobs.claim(registry, "w1", free_gpus=["0", "1"]) is None  # foreground jobs are not for workers
    fg = jobs.claim(registry, "fg", job_id=ids[3])
    assert fg.id == ids[3]
    assert jobs.claim(registry, "fg", job_id=ids[3]) is None


def test_heartbeat_reap_and_attempts(registry):
    a, b, fg = (jobs.enqueue(registry, probe_config(label=i), max_attempts=m, executor=e)
                for i, (m, e) in enumerate([(2, "local"), (1, "local"), (3, "foreground")]))
    for _ in range(2):
        jobs.claim(registry, "w1")
    jobs.claim(registry, "fg", job_id=fg)
    assert jobs.heartbeat_jobs(registry, "w1", [a, b, fg]) == {a: False, b: False}
    assert jobs.reap(registry, expiry_s=60) == []
    old = utcnow() - timedelta(seconds=120)
    with registry.begin() as s:
        s.execute(update(Job).values(heartbeat_at=old))
    got = dict(jobs.reap(registry, expiry_s=60))
    assert got == {a: "queued", b: "failed", fg: "failed"}
    with registry.Session() as s:
        assert "gave up after 1 attempt" in s.get(Job, b).error
        assert "foreground run lost" in s.get(Job, fg).error
        assert s.get(Job, a).worker_id is None
    assert jobs.heartbeat_jobs(registry, "w1", [a]) == {}  # no longer ours
    c = jobs.claim(registry, "w2")
    assert (c.id, c.attempt) == (a, 2)
    # a stale claim cannot finish a job claimed again since
    assert not jobs.finish(registry, a, "done", attempt=1)
    assert jobs.finish(registry, a, "done", attempt=2, worker_id="w2")


def test_cancel_retry_rm(registry, tmp_path):
    q, r = jobs.enqueue(registry, probe_config(label="q")), jobs.enqueue(registry, probe_config(label="r"))
    assert jobs.cancel(registry, q) == "cancelled"
    jobs.claim(registry, "w")
    assert jobs.cancel(registry, r) == "cancel_requested"
    assert jobs.heartbeat_jobs(registry, "w", [r]) == {r: True}
    with pytest.raises(jobs.JobStateError):
        jobs.retry(registry, r)
    with pytest.raises(jobs.JobStateError, match="running"):
        jobs.rm(registry, r)
    with pytest.raises(jobs.JobNotFoundError):
        jobs.cancel(registry, 999)
    jobs.retry(registry, q)
    with registry.Session() as s:
        assert (s.get(Job, q).status, s.get(Job, q).attempts) == ("queued", 0)
    assert jobs.finish(registry, r, "cancelled", worker_id="w")
    with pytest.raises(jobs.JobStateError, match="nothing to cancel"):
        jobs.cancel(registry, r)
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    with registry.begin() as s:
        s.get(Job, r).run_dir = str(run_dir)
    sink = RegistrySink(registry, r)
    sink.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.5}}))
    sink.close()
    assert jobs.rm(registry, r, purge=True) == str(run_dir)
    assert not run_dir.exists()
    with registry.Session() as s:
        assert s.get(Job, r) is None
        assert s.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == r)) == 0
        assert s.scalar(select(func.count()).select_from(Summary).where(Summary.job_id == r)) == 0


# ------------------------------------------------------------------ sink


def _steps(sink, lo, hi, epoch=1):
    for st in range(lo, hi + 1):
        sink.emit(Event("step", {"epoch": epoch, "step": st, "loss": 10.0 / st + (st == 4) * 5, "terms": {"ctx": 1.0}, "lr": 0.1}))


def test_sink_batches_is_idempotent_and_keeps_summaries(registry):
    jid = jobs.enqueue(registry, probe_config())
    sink = RegistrySink(registry, jid, flush_every_s=3600, flush_every_n=10_000)
    sink.emit(Event("start", {"epochs": 3, "start_epoch": 0, "run_dir": "x"}))
    _steps(sink, 1, 6)
    with registry.Session() as s:  # nothing written per step
        assert s.scalar(select(func.count()).select_from(Metric)) == 0
    sink.emit(Event("epoch", {"epoch": 1, "loss": 2.0}))  # epoch-level events flush
    sink.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.4, "MAP@R": 0.2}}))
    sink.emit(Event("checkpoint", {"epoch": 1, "path": "c.pt"}))
    # a resumed attempt replays steps 5-8 and epoch 1's eval with other values
    sink2 = RegistrySink(registry, jid, flush_every_s=3600, flush_every_n=3)
    for st in range(5, 9):
        sink2.emit(Event("step", {"epoch": 2, "step": st, "loss": 99.0, "terms": {}, "lr": 0.1}))
    sink2.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.9}}))
    sink2.emit(Event("eval", {"epoch": 2, "metrics": {"R@1": 0.3}}))
    sink2.emit(Event("done", {"metrics": {"R@1": 0.3}}))
    sink2.close()
    sink.close()
    series = metric_series(registry, jid)
    loss = series["train/loss"]
    assert [st for st, _ in loss] == list(range(1, 9))  # no gap, no duplicate
    assert loss[4][1] == pytest.approx(2.0)  # step 5 kept its first value
    assert series["R@1"] == [(1, 0.4), (2, 0.3)]
    with registry.Session() as s:
        summ = {r.key: r for r in s.scalars(select(Summary).where(Summary.job_id == jid))}
        assert (summ["R@1"].best, summ["R@1"].best_step, summ["R@1"].last, summ["R@1"].last_step) == (0.4, 1, 0.3, 2)
        tl = summ["train/loss"]
        assert (tl.best_step, tl.last_step, tl.last) == (6, 8, 99.0)  # losses: min is best
        assert tl.best == pytest.approx(10 / 6)
        job = s.get(Job, jid)
        assert (job.epoch, job.total_epochs, job.last_step) == (1, 3, 8)
        kinds = [e.kind for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.id))]
        assert [k for k in kinds if k in ("start", "checkpoint", "done")] == ["start", "checkpoint", "done"]


def _claim_many(args):
    url, n_tries = args
    reg = open_registry(url)
    got = []
    misses = 0
    while misses < n_tries:
        c = jobs.claim(reg, f"w{os.getpid()}")
        if c is None:
            misses += 1
            continue
        got.append(c.id)
    reg.dispose()
    return got


def _check_claims_once(url, n_jobs=120, procs=6):
    reg = open_registry(url)
    ids = [i for i, _ in jobs.enqueue_many(reg, [probe_config(label=i) for i in range(n_jobs)])]
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        results = pool.map(_claim_many, [(url, 2)] * procs)
    claimed = [j for r in results for j in r]
    assert sorted(claimed) == sorted(ids)  # every job exactly once
    with reg.Session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status == "running", Job.attempts == 1)) == n_jobs
    reg.dispose()


@pytest.mark.slow
def test_concurrent_claims_sqlite(tmp_path):
    _check_claims_once(str(tmp_path / "experiments.db"))


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_claims_postgres(pg_url):
    with pg_schema_url(pg_url) as url:
        _check_claims_once(url)


@pytest.mark.postgres
def test_postgres_queue_and_sink(pg_url):
    with pg_schema_url(pg_url) as url:
        reg = open_registry(url)
        assert reg.is_postgres
        a = jobs.enqueue(reg, probe_config(label="a"), n_gpus=1)
        assert jobs.enqueue(reg, probe_config(label="a"), n_gpus=1) == a
        assert jobs.claim(reg, "w", free_gpus=[]) is None
        c = jobs.claim(reg, "w", free_gpus=["2"])
        assert (c.id, c.gpus) == (a, ["2"])
        sink = RegistrySink(reg, a, flush_every_n=2)
        _steps(sink, 1, 5)
        sink.close()
        sink = RegistrySink(reg, a)
        _steps(sink, 3, 7)
        sink.close()
        assert [st for st, _ in metric_series(reg, a, ["train/loss"])["train/loss"]] == list(range(1, 8))
        with reg.begin() as s:
            s.execute(update(Job).values(heartbeat_at=utcnow() - timedelta(seconds=99)))
        assert jobs.reap(reg, 10) == [(a, "queued")]
        assert jobs.rm(reg, a) is not None
        reg.dispose()


def test_runs_table_polls_incrementally(registry):
    from ctxsim.registry.queries import runs_table

    a = jobs.enqueue(registry, probe_config(label="a"), tags=["t"])
    b = jobs.enqueue(registry, probe_config(label="b"))
    sink = RegistrySink(registry, a)
    _steps(sink, 1, 5)
    sink.emit(Event("eval", {"epoch": 1, "metrics": {"R@1": 0.5}}))
    sink.close()
    full = runs_table(registry)
    assert full == runs_table(registry) and all("updated_at" in r for r in full)
    assert full[1]["summaries"]["R@1"]["best"] == 0.5 and full[1]["tags"] == ["t"]
    since = max(r["updated_at"] for r in full)
    assert runs_table(registry, updated_since=since) == []
    import time as _t

    _t.sleep(0.01)
    jobs.claim(registry, "w")  # claims a: its row changes
    sink = RegistrySink(registry, a)
    _steps(sink, 6, 7)
    sink.close()
    changed = runs_table(registry, updated_since=since)
    assert [r["id"] for r in changed] == [a] and changed[0]["last_step"] == 7 and b not in [r["id"] for r in changed]
    assert metric_series(registry, a, ["train/loss"], since_step={"train/loss": 5}) == {
        "train/loss": metric_series(registry, a, ["train/loss"])["train/loss"][5:]}


def test_done_event_records_how_the_model_was_selected(registry):
    from ctxsim.registry.models import EventKind
    from ctxsim.registry.queries import job_event_payloads
    from ctxsim.report.compare import done_data, selected_on_test

    jid = jobs.enqueue(registry, probe_config(label="sel"))
    c = jobs.claim(registry, "w", job_id=jid)
    sink = RegistrySink(registry, jid)
    sink.emit(Event("done", {"metrics": {"R@1": 0.5, "MAP@R": float("nan")}, "selected": "best",
                             "selected_on": "test", "best_epoch": 3}))
    sink.close()
    jobs.finish(registry, jid, "done", attempt=c.attempt, worker_id="w", exit_code=0)
    payloads = job_event_payloads(registry, [jid], EventKind.DONE)[jid]
    # the sink's event (exact values; NaN stored as null) and then finish's own row (exit code only)
    assert payloads == [{"metrics": {"R@1": 0.5, "MAP@R": None}, "selected": "best", "selected_on": "test",
                         "best_epoch": 3}, {"exit_code": 0, "error": None}]
    done = done_data(payloads)
    assert selected_on_test(done) and done["metrics"]["R@1"] == 0.5 and done["best_epoch"] == 3
    with registry.Session() as s:  # the human message stays
        msgs = [e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid, JobEvent.kind == "done"))]
    assert "selected=best" in msgs[0] and msgs[1] == "exit code 0"


def test_set_priority_moves_only_queued_jobs(registry):
    from ctxsim.errors import JobNotFoundError, JobStateError

    low = jobs.enqueue(registry, probe_config(label="low"))
    high = jobs.enqueue(registry, probe_config(label="high"))
    assert jobs.set_priority(registry, high, 10) == 0
    assert jobs.set_priority(registry, high, -3, relative=True) == 10
    with registry.Session() as s:
        assert s.get(Job, high).priority == 7
    assert jobs.claim(registry, "w").id == high  # highest priority first, though newer
    with pytest.raises(JobStateError, match="only queued"):
        jobs.set_priority(registry, high, 1)
    with pytest.raises(JobNotFoundError):
        jobs.set_priority(registry, 999, 1)
    assert jobs.claim(registry, "w").id == low


def test_the_head_revision_constant_is_alembics_head():
    """Opening a current registry compares with HEAD_REVISION and never loads Alembic: the constant
    must move with every new revision file."""
    from ctxsim.registry.migrations import HEAD_REVISION

    assert HEAD_REVISION == head_revision() == f"v{SCHEMA_VERSION}"
