"""Job commands: ls, show, logs, cancel, retry, priority, rm (docs/architecture.md §3-4); sweep and
worker have their own modules.

Exit codes (ctxsim/errors.py): 0 ok; 1 a job failed (``logs -f`` of a job that ends failed);
2 bad input (unknown dataset/loss/--set key, bad value, operation not allowed in the job's
state); 3 registry unusable (unreachable, read-only, locked, newer schema); 4 no such job / log;
130 interrupted. Heavy modules are imported inside the commands (``ctxsim --help`` stays fast).
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    fail,
    fmt_metric,
    info,
    is_percent_metric,
    open_registry_or_exit,
    print_json,
    print_rows,
    table_console,
)
from ctxsim.cli.options import DbOpt, JsonOpt
from ctxsim.registry.states import JobStatus


def _fmt_num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4g}"


def ls(
    status: Annotated[Optional[str], typer.Option("--status", "-s", help="Statuses, comma-separated (queued,running,done,failed,cancelled).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Newest N jobs only.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table (full values when piped) or tsv (one tab-separated line per job).")] = "table",
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """List jobs, newest first, with progress, last loss and best R@1 (percent; --json: fractions)."""
    from ctxsim.registry.models import JOB_STATUSES

    statuses = [v.strip() for v in status.split(",") if v.strip()] if status else None
    bad = [s for s in statuses or [] if s not in JOB_STATUSES]
    if bad:
        fail(f"unknown status {bad[0]!r} (one of {', '.join(JOB_STATUSES)})", EXIT_USAGE)
    if fmt not in ("table", "tsv"):
        fail(f"--format must be table or tsv (or --json), got {fmt!r}", EXIT_USAGE)
    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.queries import runs_table

    rows = runs_table(reg, status=statuses, dataset=dataset, loss=loss, limit=limit)
    if json_:
        print_json(rows)
        return
    from ctxsim.registry.states import JOB_STATUS_STYLE as colors  # the dashboard's colours too

    tsv = fmt == "tsv"
    header = ["id", "status", "dataset", "loss", "res", "seed", "epoch", "loss↓" if not tsv else "train_loss",
              "R@1 %" if not tsv else "R@1_pct", "worker/gpus" if not tsv else "worker_gpus", "name"]
    cells = []
    for r in rows:
        sm = r["summaries"]
        ep = f"{r['epoch'] or 0}/{r['total_epochs'] or '?'}"
        where = r["worker_host"] or ""
        if r["gpus"]:
            where += f" [{r['gpus']}]"
        line = [str(r["id"]), r["status"], r["dataset"], r["loss"], str(r["resolution"] or ""),
                "" if r["seed"] is None else str(r["seed"]), ep,
                _fmt_num(sm.get("train/loss", {}).get("last")), fmt_metric("R@1", sm.get("R@1", {}).get("best")),
                where, r["name"] or ""]
        cells.append(line)
    print_rows(header, cells, fmt=fmt, no_wrap=("id", "status"), styles={"status": colors})
    if not rows:
        info("no jobs")


def _profile_info(config_json: Optional[str]) -> dict:
    """The job config's profile and its switches with their values (``ctxsim.train.profiles``)."""
    import json as _json

    from ctxsim.errors import CtxsimError
    from ctxsim.train.config import RunConfig
    from ctxsim.train.profiles import switch_rows

    try:
        cfg = RunConfig.from_dict(_json.loads(config_json or ""))
    except (ValueError, TypeError, CtxsimError):
        return {}
    return {"profile": cfg.profile, "profile_switches": [{k: r[k] for k in ("switch", "value", "reference", "fixed")}
                                                         for r in switch_rows(cfg)]}


def show(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """A job's state, config, provenance, summaries (retrieval metrics in percent) and recent events."""
    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.queries import job_detail, job_events

    d = job_detail(reg, job_id)
    if d is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    d["events"] = job_events(reg, job_id, limit=50)
    d.update(_profile_info(d.get("config_json")))
    if json_:
        print_json(d)
        return
    import json as _json

    out = table_console()  # a pipe gets whole lines
    keys = ("status", "name", "dataset", "loss", "resolution", "seed", "priority", "attempts", "max_attempts",
            "epoch", "total_epochs", "last_step", "executor", "n_gpus", "gpus", "worker_id", "worker_host", "slurm_id",
            "created_at",
            "started_at", "finished_at", "heartbeat_at", "exit_code", "error", "git_commit", "git_dirty",
            "config_hash", "run_dir")
    out.print(f"[bold]job {job_id}[/]")
    for k in keys:
        if d.get(k) not in (None, ""):
            out.print(f"  {k:14} {d[k]}", highlight=False)
    if d["tags"]:
        out.print(f"  {'tags':14} {', '.join(d['tags'])}", highlight=False)
    if d["summaries"]:
        from ctxsim.names import metric_direction

        out.print("[bold]summaries[/] (best @ step / last @ step; R@K, MAP@R, RP in percent)")
        for k, s in sorted(d["summaries"].items()):
            num = (lambda v, k=k: fmt_metric(k, v)) if is_percent_metric(k) else (lambda v: f"{v:.5g}")
            direction = metric_direction(k)
            best = f"{num(s['best'])} @ {s['best_step']} ({direction} is better)" if direction else "-"
            out.print(f"  {k:22} {best} / {num(s['last'])} @ {s['last_step']}", highlight=False)
    out.print("[bold]config[/]")
    out.print(_json.dumps(_json.loads(d["config_json"]), indent=2, sort_keys=True), highlight=False)
    switches = d.get("profile_switches")
    if switches:
        out.print(f"[bold]profile[/] {d.get('profile')} (switches: docs/profiles.md)")
        for r in switches:
            mark = "" if r["value"] == r[d.get("profile") or "fixed"] else "  (set explicitly)"
            out.print(f"  {r['switch']:22} {r['value']!s:18} reference={r['reference']!s} fixed={r['fixed']!s}{mark}",
                      highlight=False)
    if d["events"]:
        out.print("[bold]events[/]")
        for e in d["events"]:
            out.print(f"  {e['time']:%Y-%m-%d %H:%M:%S} {e['kind']:16} {e['message']}", highlight=False)


def logs(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Start with the last N lines (0: whole file).")] = 50,
    db: DbOpt = None,
) -> None:
    """Print a job's stdout/stderr (``<run_dir>/stdout.log``); ``-f`` follows it until the job ends."""
    import sys

    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.db import read_registry
    from ctxsim.registry.jobs import job_states
    from ctxsim.registry.queries import job_detail
    from ctxsim.runner.logs import LogFollower, job_log_path

    ro = read_registry(reg)
    d = job_detail(ro, job_id)
    if d is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    path = job_log_path(d["run_dir"])
    if not follow and (path is None or not path.is_file()):
        fail(f"job {job_id} has no log yet ({d['status']}): {path or 'no run folder'}", EXIT_NOT_FOUND)
    follower = LogFollower(path, tail_bytes=None, tail_lines=lines if lines > 0 else None)
    status = d["status"]
    last_check = time.monotonic()
    while True:
        done = not follow or status not in (JobStatus.QUEUED, JobStatus.RUNNING)
        new, _reset = follower.read(final=done)
        if new:
            sys.stdout.write("".join(line + "\n" for line in new))
            sys.stdout.flush()
        if done:
            break
        time.sleep(0.25)
        if time.monotonic() - last_check >= 1.0:
            st = job_states(ro, [job_id]).get(job_id)
            status = st[0] if st else "removed"
            last_check = time.monotonic()
    if not follow:
        return
    info(f"job {job_id} is {status}")
    if status == JobStatus.FAILED:
        raise typer.Exit(EXIT_FAILED)


def cancel(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Cancel a job: a queued job at once; a running one is stopped by its worker within seconds."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    state = jobs.cancel(reg, job_id)
    if json_:
        print_json({"id": job_id, "state": state})
    else:
        info(f"job {job_id}: {JobStatus.CANCELLED if state == JobStatus.CANCELLED else 'cancel requested (its worker stops it)'}")


def retry(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    keep_attempts: Annotated[bool, typer.Option("--keep-attempts", help="Keep the attempt count (default: reset to 0).")] = False,
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    jobs.retry(reg, job_id, reset_attempts=not keep_attempts)
    if json_:
        print_json({"id": job_id, "state": JobStatus.QUEUED})
    else:
        info(f"job {job_id}: queued again")


def priority(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    value: Annotated[int, typer.Argument(help="New priority (higher runs first; may be negative).")],
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Change a queued job's priority (workers take the highest priority first, then the oldest)."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    old = jobs.set_priority(reg, job_id, value)
    if json_:
        print_json({"id": job_id, "priority": value, "previous": old})
    else:
        info(f"job {job_id}: priority {old} -> {value}")


def rm(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    force: Annotated[bool, typer.Option("--force", help="Also remove a running job (its worker stops it).")] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete its run directory.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="With --force: seconds to wait for a running job to stop cleanly "
        "(cancel, checkpoint) before removing it.")] = 60.0,
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Remove a job and its metrics, summaries, events and tags from the registry."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    run_dir = jobs.rm(reg, job_id, force=force, purge=purge, stop_timeout_s=wait)
    if json_:
        print_json({"id": job_id, "removed": True, "run_dir": run_dir, "purged": bool(purge)})
    else:
        info(f"job {job_id}: removed" + (f" (deleted {run_dir})" if purge and run_dir else ""))


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("ls")(ls)
    app.command("show")(show)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
    app.command("retry")(retry)
    app.command("priority")(priority)
    app.command("rm")(rm)
