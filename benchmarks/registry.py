"""Registry and queue speed: claims/s with 1/4/8 worker processes, metric points/s ingested by the
RegistrySink, the dashboard's queries at 1,000 jobs x 5,000 points, and ``ctxsim --help``.

Each row has a plain reference implementation measured in the same run (ratio = ours / reference
for rates, reference / ours for latencies, so > 1 means ours is better):

- claim: SELECT the next id, then UPDATE ... WHERE id=? AND status='queued' (retry when beaten);
  ours is the one-statement UPDATE ... WHERE id=(SELECT ...) RETURNING.
- ingestion: one ORM Metric row per point and a commit per step (what the sink avoids).
- runs table: best R@1 / last loss aggregated from the metrics table (no summaries); ours: the
  shared ``runs_table`` (Core reads) and its incremental poll (``updated_since``).
- one run's curves: the same query with the (job, key, step) index disabled (``NOT INDEXED``).

Peak memory is the benchmark process's max RSS after each stage. Usage:

    python benchmarks/registry.py [--jobs 1000] [--points 5000] [--pg URL] [--quick] [--parts claims,ingest,queries,help]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ claims


def _claimer(url: str, mode: str, barrier, out) -> None:
    from sqlalchemy import select, update

    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Job, utcnow

    reg = open_registry(url)
    wid = f"bench{os.getpid()}"
    with reg.Session() as s:  # warm the connection pool outside the timed part
        s.execute(select(Job.id).limit(1)).all()
    barrier.wait()
    n = 0
    if mode == "ours":
        while jobs.claim(reg, wid) is not None:
            n += 1
    else:
        while True:
            def once(s):
                jid = s.scalar(select(Job.id).where(Job.status == "queued").order_by(Job.priority.desc(), Job.id).limit(1))
                if jid is None:
                    return None
                r = s.execute(update(Job).where(Job.id == jid, Job.status == "queued")
                              .values(status="running", worker_id=wid, attempts=Job.attempts + 1, heartbeat_at=utcnow()))
                return jid if r.rowcount else 0

            got = reg.run(once)
            if got is None:
                break
            n += bool(got)
    out.put((n, time.perf_counter()))
    reg.dispose()


def bench_claims(url: str, n_jobs: int, n_workers: int, mode: str) -> float:
    from sqlalchemy import delete

    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Job
    from ctxsim.runner.probe import probe_config

    reg = open_registry(url)
    reg.run(lambda s: s.execute(delete(Job)))
    rows = []
    for i in range(n_jobs):
        f = jobs.config_fields(probe_config(label=i))
        f.pop("total_epochs")
        rows.append(dict(f, status="queued", priority=0, attempts=0, max_attempts=3, executor="local", n_gpus=0,
                         cancel_requested=False, epoch=0, last_step=0))
    jobs.insert_job_rows(reg, rows)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(n_workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, mode, barrier, out)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = sum(n for n, _ in results)
    assert total == n_jobs, (total, n_jobs)  # every job claimed exactly once
    reg.dispose()
    return total / (max(t for _, t in results) - t0)


# ------------------------------------------------------------------ ingestion


def bench_ingest_ours(url: str, n_steps: int) -> float:
    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.sink import RegistrySink
    from ctxsim.runner.probe import probe_config
    from ctxsim.train.events import Event

    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(label=f"ingest{time.time()}"))
    sink = RegistrySink(reg, jid)
    events = [Event("step", {"epoch": 1, "step": i, "loss": 1.0 / i, "terms": {"ctx": 0.5 / i, "con": 0.2 / i, "reg": 0.01},
                             "lr": 1e-4, "images_per_s": 100.0}) for i in range(1, n_steps + 1)]
    n_points = n_steps * 6
    t0 = time.perf_counter()
    for e in events:
        sink.emit(e)
    sink.close()
    dt = time.perf_counter() - t0
    reg.dispose()
    return n_points / dt


def bench_ingest_reference(url: str, n_steps: int) -> float:
    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Metric
    from ctxsim.runner.probe import probe_config

    reg = open_registry(url)
    jid = jobs.enqueue(reg, probe_config(label=f"ingest-ref{time.time()}"))
    t0 = time.perf_counter()
    for i in range(1, n_steps + 1):
        with reg.begin() as s:
            for k, v in (("train/loss", 1.0 / i), ("train/ctx", 0.5 / i), ("train/con", 0.2 / i), ("train/reg", 0.01),
                         ("train/lr", 1e-4), ("train/images_per_s", 100.0)):
                s.add(Metric(job_id=jid, key=k, step=i, value=v, time=time.time()))
    dt = time.perf_counter() - t0
    reg.dispose()
    return n_steps * 6 / dt


# ------------------------------------------------------------------ dashboard queries


STEP_KEYS = ("train/loss", "train/ctx", "train/con", "train/lr")
EVAL_KEYS = ("R@1", "MAP@R", "RP", "epoch/loss")


def populate(url: str, n_jobs: int, points: int) -> int:
    """n_jobs done jobs with ``points`` metric points each (4 step series + 4 epoch series) and
    their summaries. Bulk SQL (not the measured ingestion path). Returns points written."""
    from sqlalchemy import delete, text

    from ctxsim.registry import jobs
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Job, Summary
    from ctxsim.runner.probe import probe_config

    reg = open_registry(url)
    reg.run(lambda s: s.execute(delete(Job)))
    epochs = 10
    steps = (points - len(EVAL_KEYS) * epochs) // len(STEP_KEYS)
    rows = []
    for i in range(n_jobs):
        f = jobs.config_fields(probe_config(label=i))
        f.update(dataset=("cub", "cars", "sop", "inshop")[i % 4], loss=("hybrid", "contrastive")[i % 2], resolution=256,
                 status=("done", "running", "failed", "queued")[i % 4], epoch=epochs, total_epochs=epochs, last_step=steps,
                 priority=0, attempts=1, max_attempts=3, executor="local", n_gpus=1, cancel_requested=False)
        rows.append(f)
    jobs.insert_job_rows(reg, rows)
    with reg.engine.begin() as c:
        c.execute(text(f"""
            INSERT INTO metrics (job_id, key, step, value, time)
            WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {steps}),
                 k(key, w) AS (VALUES {", ".join(f"('{k}', {n + 1})" for n, k in enumerate(STEP_KEYS))})
            SELECT j.id, k.key, s.x, (1.0 * k.w) / s.x + (j.id % 7) * 0.01, 0.0 FROM jobs j, k, s"""))
        c.execute(text(f"""
            INSERT INTO metrics (job_id, key, step, value, time)
            WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {epochs}),
                 k(key) AS (VALUES {", ".join(f"('{k}')" for k in EVAL_KEYS)})
            SELECT j.id, k.key, s.x, s.x * 0.05 + (j.id % 5) * 0.01, 0.0 FROM jobs j, k, s"""))
    ids = [r["id"] for r in _ids(reg)]
    summ = []
    for jid in ids:
        for n, k in enumerate(STEP_KEYS):
            v = (n + 1) / steps + (jid % 7) * 0.01
            summ.append(dict(job_id=jid, key=k, best=v, best_step=steps, last=v, last_step=steps))
        for k in EVAL_KEYS:
            v = epochs * 0.05 + (jid % 5) * 0.01
            summ.append(dict(job_id=jid, key=k, best=v, best_step=epochs, last=v, last_step=epochs))
    from sqlalchemy import insert

    reg.run(lambda s: s.execute(insert(Summary.__table__), summ))
    if reg.is_sqlite:
        with reg.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    reg.dispose()
    return n_jobs * (steps * len(STEP_KEYS) + epochs * len(EVAL_KEYS))


def _ids(reg):
    from sqlalchemy import select

    from ctxsim.registry.models import Job

    with reg.Session() as s:
        return [{"id": i} for i in s.scalars(select(Job.id).order_by(Job.id))]


def _median_ms(fn, repeat: int = 7) -> float:
    fn()  # warm caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_queries(url: str, reference_runs: bool = True) -> dict[str, tuple[float, float]]:
    """{label: (ours ms, reference ms)} of the dashboard's reads."""
    from sqlalchemy import text

    from ctxsim.registry.db import open_registry
    from ctxsim.registry.queries import metric_series, runs_table

    reg = open_registry(url)
    job = _ids(reg)[len(_ids(reg)) // 2]["id"]
    out = {}

    def ref_table():
        with reg.engine.connect() as c:
            c.execute(text("SELECT * FROM jobs ORDER BY id DESC")).all()
            c.execute(text("SELECT job_id, key, MAX(value), MIN(value), MAX(step) FROM metrics "
                           "WHERE key IN ('R@1', 'MAP@R', 'train/loss') GROUP BY job_id, key")).all()

    ref = _median_ms(ref_table, 2) if reference_runs else float("nan")
    full = runs_table(reg)
    out["runs table, full: runs_table"] = (_median_ms(lambda: runs_table(reg)), ref)
    since = max(r["updated_at"] for r in full)
    out["runs table, incremental poll (updated_since)"] = (
        _median_ms(lambda: runs_table(reg, updated_since=since)), ref)

    keys = ["train/loss", "R@1", "MAP@R"]

    def ref_curves():
        with reg.engine.connect() as c:
            return c.execute(text("SELECT key, step, value FROM metrics NOT INDEXED WHERE job_id = :j "
                                  "AND key IN ('train/loss', 'R@1', 'MAP@R') ORDER BY key, step"), {"j": job}).all()

    ref = _median_ms(ref_curves, 2) if reference_runs else float("nan")
    out["one run's curves (3 keys): metric_series"] = (_median_ms(lambda: metric_series(reg, job, keys)), ref)
    pts = metric_series(reg, job, keys)
    since_step = {k: v[-1][0] - 5 for k, v in pts.items()}
    out["one run's curves, incremental poll (since_step)"] = (
        _median_ms(lambda: metric_series(reg, job, keys, since_step=since_step)), ref)
    reg.dispose()
    return out


def help_time(repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--claim-jobs", type=int, default=2000)
    ap.add_argument("--ingest-steps", type=int, default=20000, help="step events (6 points each)")
    ap.add_argument("--pg", default=None, help="also measure claims and ingestion on this PostgreSQL URL")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--parts", default="claims,ingest,queries,help", help="comma-separated subset to run")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.quick:
        args.jobs, args.points, args.claim_jobs, args.ingest_steps = 100, 1000, 300, 2000
    tmp = Path(tempfile.mkdtemp(prefix="ctxsim-bench-"))
    backends = [("sqlite", str(tmp / "bench.db"))]
    cleanup = None
    if args.pg:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from registry_helpers import pg_schema_url

        cleanup = pg_schema_url(args.pg)
        backends.append(("postgresql", cleanup.__enter__()))
    rows = []
    n, fill = 0, 0.0
    try:
        for name, url in backends:
            for k in (1, 4, 8) if "claims" in parts else ():
                ours = bench_claims(url, args.claim_jobs, k, "ours")
                ref = bench_claims(url, args.claim_jobs, k, "reference")
                rows.append((f"claims/s, {k} worker process(es)", name, f"{ours:,.0f}", f"{ref:,.0f}", ours / ref,
                             ">= 200" if k == 8 else "", _peak_mb()))
            if "ingest" in parts:
                ours = bench_ingest_ours(url, args.ingest_steps)
                ref = bench_ingest_reference(url, max(200, args.ingest_steps // 20))
                rows.append(("metric points/s ingested", name, f"{ours:,.0f}", f"{ref:,.0f}", ours / ref, ">= 50,000",
                             _peak_mb()))
        url = backends[0][1]
        if "queries" in parts:
            t0 = time.perf_counter()
            n = populate(url, args.jobs, args.points)
            fill = time.perf_counter() - t0
            for label, (ours, ref) in bench_queries(url).items():
                rows.append((f"{label} [ms]", "sqlite", f"{ours:.2f}", f"{ref:.2f}", ref / ours, "<= 20 ms", _peak_mb()))
        if "help" in parts:
            h = help_time()
            rows.append(("ctxsim --help [s]", "-", f"{h:.3f}", "", float("nan"), "< 0.3 s", _peak_mb()))
    finally:
        if cleanup is not None:
            cleanup.__exit__(None, None, None)
    print(f"\nregistry benchmark: {args.jobs} jobs x {args.points} points ({n:,} metric rows, bulk-filled in "
          f"{fill:.1f} s), {args.claim_jobs} jobs per claim run, {args.ingest_steps} step events; "
          f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}\n")
    head = ("measure", "db", "ctxsim", "reference", "ratio", "target", "peak RSS MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ratio = "" if r[4] != r[4] else f"{r[4]:.1f}x"
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {ratio} | {r[5]} | {r[6]:.0f} |")
    db = Path(backends[0][1])
    if db.exists():
        print(f"\nSQLite file: {db.stat().st_size / 1e6:.0f} MB")
    for p in tmp.glob("*"):
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
