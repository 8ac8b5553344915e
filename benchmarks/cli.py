"""Wall time of the read commands on a large registry, against a bare interpreter in the same run.

    python benchmarks/cli.py [--runs 1000] [--db /tmp/ctxsim-cli-bench.db] [--repeat 5] [--out FILE.md]

Each command runs once to warm up, then ``--repeat`` times as its own process (``python -m
ctxsim.cli.main ...``, bytecode caching on); the table gives the median and the maximum, the ratio to
``python -c pass`` timed the same way, and whether the command imported torch, faiss or scikit-learn
(``-X importtime``, one more run). The "dependency floor" line imports only what every registry
command needs from its dependencies (Typer, which imports pydantic, rich and SQLAlchemy's ORM):
what ctxsim adds is the difference. The
registry holds ``--runs`` jobs with real recipe configs, summaries, 50 metric points, a start event
with a reference-matching data fingerprint and a one-line log each; it is built once and reused.
Nothing is asserted: the figures go to the README and benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

HEAVY = ("torch", "faiss", "sklearn")
DATASETS = ("cub", "cars", "sop", "inat", "inshop")
LOSSES = ("hybrid", "contrastive", "multisimilarity", "proxy_anchor", "roadmap")
NOW = datetime(2026, 12, 1, 12, 0, 0)


def build(path: Path, runs: int) -> None:
    """A registry of ``runs`` jobs (bulk inserts; torch is imported here, never by the commands timed)."""
    from sqlalchemy import insert

    from ctxsim.data.fingerprint import REFERENCE_COUNTS, REFERENCE_SHA256_PREFIX
    from ctxsim.registry.db import open_registry
    from ctxsim.registry.models import Job, JobEvent, Metric, Summary, Worker
    from ctxsim.train.recipes import recipe

    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    logs = path.with_suffix(".runs")
    logs.mkdir(exist_ok=True)
    reg = open_registry(path)
    with reg.begin() as s:
        s.add(Worker(id="bench-w1", host="bench", pid=1, gpus="0,1", started_at=NOW, heartbeat_at=NOW))
    configs = {}
    jobs, events, metrics, summaries = [], [], [], []
    for i in range(1, runs + 1):
        ds, loss, res = DATASETS[i % 5], LOSSES[(i // 5) % 5], 256 if i % 3 else 224
        if (ds, loss, res) not in configs:
            try:
                configs[(ds, loss, res)] = recipe(ds, loss, res)
            except Exception:  # no 224 recipe for inat/inshop: use 256
                configs[(ds, loss, res)] = recipe(ds, loss, 256)
        cfg = configs[(ds, loss, res)].with_overrides(seed=i % 3)
        status = "running" if i > runs - 4 else ("queued" if i > runs - 20 else ("failed" if i % 17 == 0 else "done"))
        run_dir = logs / f"job{i}"
        run_dir.mkdir(exist_ok=True)
        (run_dir / "stdout.log").write_text(f"epoch 1: R@1 {0.5 + i % 7 / 100:.4f}\n")
        jobs.append({"id": i, "name": None if i % 4 else f"run-{i}", "dataset": ds, "loss": loss,
                     "resolution": cfg.resolution, "seed": cfg.seed, "config_json": cfg.to_json(),
                     "config_hash": cfg.config_hash(), "status": status, "epoch": cfg.epochs if status == "done" else 3,
                     "total_epochs": cfg.epochs, "started_at": NOW - timedelta(hours=2), "heartbeat_at": NOW,
                     "finished_at": NOW if status in ("done", "failed") else None, "run_dir": str(run_dir),
                     "worker_id": "bench-w1" if status == "running" else None, "updated_at": NOW})
        splits = {k: {"images": v[0], "classes": v[1], "sha256": REFERENCE_SHA256_PREFIX.get(ds, {}).get(k, "") + "0" * 56}
                  for k, v in REFERENCE_COUNTS[ds].items()}  # the reference split: comparable runs
        events.append({"job_id": i, "time": NOW, "kind": "start", "message": "start",
                       "payload": {"fingerprint": {"dataset": ds, "splits": splits}}})
        for key, base in (("R@1", 0.6), ("MAP@R", 0.3), ("train/loss", 0.5)):
            pts = [(e, base + 0.01 * e + 0.001 * (i % 11)) for e in range(1, 17)]
            metrics += [{"job_id": i, "key": key, "step": e, "value": v, "time": 0.0} for e, v in pts]
            summaries.append({"job_id": i, "key": key, "best": pts[-1][1], "best_step": 16, "last": pts[-1][1],
                              "last_step": 16})
    with reg.engine.begin() as c:
        c.execute(insert(Job.__table__), jobs)
        c.execute(insert(JobEvent.__table__), events)
        c.execute(insert(Metric.__table__), metrics)
        c.execute(insert(Summary.__table__), summaries)
    reg.dispose()


def time_command(argv: list[str], repeat: int, env: dict) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t0)
    return out


def heavy_imports(argv: list[str], env: dict) -> list[str]:
    r = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True)
    names = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--db", default="/tmp/ctxsim-cli-bench.db")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", help="also write the markdown table to this file")
    args = ap.parse_args()
    db = Path(args.db)
    if not db.exists():
        t0 = time.perf_counter()
        build(db, args.runs)
        print(f"built {db} ({args.runs} jobs) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    env = {**os.environ, "CTXSIM_DB": str(db), "COLUMNS": "120"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine: compiled modules are cached
    py = sys.executable
    cli = [py, "-m", "ctxsim.cli.main"]
    floor = "import typer, typer._adapters, rich.console, sqlalchemy.orm"
    cases = [
        ("python -c pass", [py, "-c", "pass"]),
        ("dependency floor: " + floor.removeprefix("import "), [py, "-c", floor]),
        ("ctxsim --help", [*cli, "--help"]),
        ("ctxsim ls", [*cli, "ls"]),
        ("ctxsim ls --json", [*cli, "ls", "--json"]),
        ("ctxsim show 1", [*cli, "show", "1"]),
        ("ctxsim logs 1", [*cli, "logs", "1"]),
        ("ctxsim compare", [*cli, "compare"]),
        ("ctxsim baselines --dataset cub", [*cli, "baselines", "--dataset", "cub"]),
        ("ctxsim tune show", [*cli, "tune", "show"]),
        ("ctxsim data verify digits", [*cli, "data", "verify", "digits"]),
        ("ctxsim data verify fashion-mnist", [*cli, "data", "verify", "fashion-mnist"]),
        ("ctxsim ls --db postgres://nohost/x", [*cli, "ls", "--db", "postgres://nohost/x"]),
    ]
    rows = []
    base = None
    for label, argv in cases:
        time_command(argv, 1, env)  # warm: bytecode written, files in the page cache
        ts = time_command(argv, args.repeat, env)
        med = statistics.median(ts)
        base = base or med
        heavy = heavy_imports(argv, env) if argv[1] != "-c" else []
        rows.append((label, med, max(ts), med / base, heavy))
        print(f"{label:38} {med:6.3f} s", file=sys.stderr)
    lines = [f"Read commands on a {args.runs}-job registry ({platform.node()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}, median of {args.repeat}; {datetime.now():%Y-%m-%d %H:%M})", "",
             "| command | median s | max s | × `python -c pass` | imports torch/faiss/sklearn |", "|---|---|---|---|---|"]
    for label, med, mx, ratio, heavy in rows:
        lines.append(f"| `{label}` | {med:.3f} | {mx:.3f} | {ratio:.1f} | {', '.join(heavy) or 'none'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    print(json.dumps({label: round(med, 3) for label, med, *_ in rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
