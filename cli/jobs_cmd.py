"""Queue commands: sweep, worker, ls, show, logs, cancel, retry, priority, rm (docs/architecture.md §3-4).

Exit codes (ctxsim/errors.py): 0 ok; 1 a job failed (``logs -f`` of a job that ends failed);
2 bad input (unknown dataset/loss/--set key, bad value, operation not allowed in the job's
state); 3 registry unusable (unreachable, read-only, locked, newer schema); 4 no such job / log;
130 interrupted. Heavy modules are imported inside the commands (``ctxsim --help`` stays fast).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import Annotated, Iterator, Optional

import typer

from ctxsim.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_REGISTRY,
    EXIT_USAGE,
    DbOption,
    console,
    fail,
    fail_on,
    fmt_metric,
    info,
    is_percent_metric,
    open_registry_or_exit,
    print_json,
    print_rows,
    table_console,
)
from ctxsim.registry.states import JobStatus

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only (on stdout).")]


@contextlib.contextmanager
def _errors(reg=None) -> Iterator[None]:
    """Library errors -> one line and the exit code their class carries (ctxsim.errors)."""
    from sqlalchemy.exc import DBAPIError

    from ctxsim.errors import CtxsimError
    from ctxsim.registry.db import describe_db_error

    try:
        yield
    except CtxsimError as e:
        fail_on(e)
    except DBAPIError as e:
        fail(describe_db_error(reg.url if reg is not None else "", e), EXIT_REGISTRY)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _seeds(spec: Optional[str]) -> list[Optional[int]]:
    """``3`` -> [0, 1, 2]; ``0,5,7`` -> those seeds; None -> the recipe's seed."""
    from ctxsim.errors import ConfigError

    if spec is None:
        return [None]
    parts = _split(spec)
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--seeds: expected a count (3) or a list (0,5,7), got {spec!r}") from None
    if len(nums) == 1 and "," not in spec:
        if nums[0] < 1:
            raise ConfigError(f"--seeds: count must be >= 1, got {nums[0]}")
        return list(range(nums[0]))
    return nums


def build_grid(datasets: str, losses: str, resolutions: str, seeds: Optional[str], sets: list[str],
               epochs: Optional[int] = None, root: Optional[str] = None, profile: Optional[str] = None) -> list:
    """The cartesian product of a sweep: [(validated RunConfig, its --set assignments)].

    Raises ConfigError on any unknown dataset, loss, key or bad value (before anything is written)."""
    from ctxsim.errors import ConfigError
    from ctxsim.train.configure import configure

    set_axes = []
    for a in sets:
        if "=" not in a:
            raise ConfigError(f"--set expects key=value1,value2,..., got {a!r}")
        key, vals = a.split("=", 1)
        set_axes.append([f"{key.strip()}={v}" for v in (_split(vals) or [""])])
    try:
        res_list = [int(r) for r in _split(resolutions)]
    except ValueError:
        raise ConfigError(f"--resolution: expected 224 and/or 256, got {resolutions!r}") from None
    ds_list, loss_list, seed_list = _split(datasets), _split(losses), _seeds(seeds)
    if not ds_list or not loss_list or not res_list:
        raise ConfigError("--dataset, --loss and --resolution each need at least one value")
    cfgs = []
    for ds, loss, res, seed, *assign in itertools.product(ds_list, loss_list, res_list, seed_list, *set_axes):
        cfg = configure(ds, loss, res, root=root, sets=list(assign), epochs=epochs, seed=seed, profile=profile)
        cfgs.append((cfg, list(assign)))
    return cfgs


def build_ablation_grid(datasets: str, losses: Optional[str], resolutions: str, seeds: Optional[str],
                        sets: list[str], epochs: Optional[int], root: Optional[str], variants: str,
                        profile: Optional[str] = None) -> list:
    """The ablation preset: every (dataset, resolution, --set) base hybrid config x variants x seeds."""
    from ctxsim.errors import ConfigError
    from ctxsim.reference.ablation import ablation_configs

    if losses and _split(losses) != ["hybrid"]:
        raise ConfigError(f"--ablation varies the hybrid loss; drop --loss or use --loss hybrid (got {losses!r})")
    out = []
    for base, assign in build_grid(datasets, "hybrid", resolutions, None, sets, epochs, root, profile):
        seed_list = [base.seed if s is None else s for s in _seeds(seeds)]
        for cfg in ablation_configs(base.dataset, base.resolution, base=base, seeds=seed_list, variants=variants):
            out.append((cfg, assign + [f"loss.ablation={cfg.loss_kw['ablation']}"]))
    return out


def preflight_grid(cfgs: list, host: bool = True) -> None:
    """``ctxsim.train.preflight`` for every config of a grid, before any job row exists: the config
    checks for each, the host checks (data, device, sampler) once per config that differs in more than
    its seed. Raises the first ConfigError / DataError (exit 2), naming the config when there are several."""
    import json as _json

    from ctxsim.errors import ConfigError, DataError, one_line
    from ctxsim.train.preflight import check_config, check_host

    seen: set[str] = set()
    for c in cfgs:
        try:
            check_config(c)
            key = _json.dumps({k: v for k, v in c.to_dict().items() if k not in ("seed", "name", "tags")},
                              sort_keys=True, default=str)
            if host and key not in seen:
                check_host(c)
                seen.add(key)
        except (ConfigError, DataError) as e:
            if len(cfgs) == 1:
                raise
            raise type(e)(f"{c.summary()}: {one_line(e)}") from None


def sweep(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Datasets, comma-separated (cub,cars).")],
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="Losses, comma-separated (hybrid,contrastive).")] = None,
    resolution: Annotated[str, typer.Option("--resolution", "-r", help="Recipe families: 224, 256 or 224,256.")] = "256",
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="A count (3 -> seeds 0,1,2) or a list (0,5,7).")] = None,
    ablation: Annotated[Optional[str], typer.Option("--ablation", help="Contextual-similarity ablation grid (docs/reference-implementation.md §8): 'all' "
        "or ids like 0,3,7; implies --loss hybrid.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=v1,v2: one more grid axis (repeatable).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override the recipe's epochs.")] = None,
    root: Annotated[Optional[str], typer.Option("--root", help="Dataset root folder.")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="reference (the authors' code exactly; default for the paper datasets) or fixed "
        "(corrected behaviour; docs/profiles.md).")] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option("--gpus-per-job", help="GPUs each job needs (default: 1 if nvidia-smi or "
        "CUDA_VISIBLE_DEVICES shows a GPU here, else 0).")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first.")] = 0,
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="Claims allowed before a crashing job is failed.")] = 3,
    name: Annotated[Optional[str], typer.Option("--name", help="Name given to every job.")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Queue even if an identical config is queued or running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid without queueing anything.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the checks that depend on this machine (data, device) for workers elsewhere; they "
        "run them before training. The config checks still run.")] = False,
    executor: Annotated[str, typer.Option("--executor", help="Who runs the jobs: local (ctxsim worker) or slurm (ctxsim worker --executor slurm).")] = "local",
    json_: JsonOpt = False,
    db: Optional[str] = DbOption,
) -> None:
    """Queue a grid of runs (datasets x losses x resolutions x seeds x --set values) for workers.
    Every config is checked first (docs/architecture.md §4.2): one that could never start is one
    line and exit 2, and nothing is queued."""
    if executor not in ("local", "slurm"):
        fail(f"--executor must be local or slurm, got {executor!r}", EXIT_USAGE)
    with _errors():
        if ablation is not None:
            grid = build_ablation_grid(dataset, loss, resolution, seeds, list(set_ or []), epochs, root, ablation,
                                       profile)
        else:
            if not loss:
                fail("--loss is required (or --ablation for the contextual-similarity ablation grid)", EXIT_USAGE)
            grid = build_grid(dataset, loss, resolution, seeds, list(set_ or []), epochs, root, profile)
        cfgs = [c for c, _ in grid]
        preflight_grid(cfgs, host=not no_check)  # every config, before anything is queued
        if gpus_per_job is None:
            from ctxsim.runner.gpus import detect_gpus

            gpus_per_job = 1 if detect_gpus(use_torch=False) else 0
        if gpus_per_job < 0:
            fail("--gpus-per-job must be >= 0", EXIT_USAGE)
    rows = [{"dataset": c.dataset, "loss": c.loss, "resolution": c.resolution, "seed": c.seed,
             "epochs": c.epochs, "set": " ".join(a), "config_hash": c.config_hash(), "n_gpus": gpus_per_job}
            for c, a in grid]
    if dry_run:
        if json_:
            print_json({"dry_run": True, "jobs": rows})
        else:
            _grid_table(rows, "would queue")
        return
    reg = open_registry_or_exit(db)
    from ctxsim.registry.jobs import enqueue_many

    with _errors(reg):
        out = enqueue_many(reg, cfgs, name=name, tags=list(tag or []), priority=priority, n_gpus=gpus_per_job,
                           max_attempts=max_attempts, force=force, executor=executor)
    for r, (jid, created) in zip(rows, out):
        r.update(id=jid, created=created)
    if json_:
        print_json({"jobs": rows})
    else:
        _grid_table(rows, JobStatus.QUEUED)
        dup = sum(not r["created"] for r in rows)
        info(f"{len(rows) - dup} job(s) queued" + (f", {dup} already queued/running (marked =; --force to add)" if dup else ""))
        console.print(" ".join(str(r["id"]) for r in rows), highlight=False)


def _grid_table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    t = Table(title=f"{len(rows)} job(s) {title}", show_edge=False)
    cols = (["id"] if rows and "id" in rows[0] else []) + ["dataset", "loss", "resolution", "seed", "epochs", "set", "n_gpus"]
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if r.get(c) is None else str(r[c])) + ("" if c != "id" or r.get("created", True) else "=") for c in cols])
    from ctxsim.cli.common import err_console

    err_console.print(t)


def worker(
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids this worker owns (0,1,...); '' for CPU only; default: all detected.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain the queue, then exit: when no queued job fits this worker and none it "
        "could take over is running elsewhere.")] = False,
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", help="Exit after starting this many jobs (and finishing them).")] = None,
    max_parallel: Annotated[Optional[int], typer.Option("--max-parallel", help="Jobs run at once (default: number of GPUs, at least 1).")] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between queue polls.")] = 2.0,
    heartbeat_expiry: Annotated[float, typer.Option("--heartbeat-expiry", help="Seconds without heartbeat before a running job is re-queued.")] = 60.0,
    grace: Annotated[float, typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL when stopping a job.")] = 10.0,
    device: Annotated[str, typer.Option("--device", help="Device passed to each job: auto, cpu or cuda.")] = "auto",
    host_name: Annotated[Optional[str], typer.Option("--host-name", help="Host name recorded on the jobs this worker runs (default: this machine's).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local: run jobs here; slurm: submit jobs queued with "
        "--executor slurm through submitit.")] = "local",
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm: Partition.")] = None,
    time_min: Annotated[Optional[int], typer.Option("--time", help="Slurm: Time limit per job, minutes (requeued from its checkpoint when hit).")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", help="Slurm: GPUs a node has: jobs needing more stay queued.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm: Account to charge.")] = None,
    slurm_config: Annotated[Optional[str], typer.Option(
        "--slurm-config", help="Slurm: TOML/JSON file of options (partition, time, gpus_per_node, account, qos, "
        "constraint, cpus_per_task, mem_gb, additional, folder).")] = None,
    slurm_cluster: Annotated[Optional[str], typer.Option("--slurm-cluster", help="Slurm: slurm (default where sbatch exists) or local (submitit's local "
        "executor: tests, a workstation).")] = None,
    db: Optional[str] = DbOption,
) -> None:
    """Run queued jobs: each in its own process group with CUDA_VISIBLE_DEVICES set; heartbeats,
    cancels, re-queues jobs of dead workers. SIGTERM/Ctrl-C re-queues the running jobs.
    With --executor slurm: submit jobs marked slurm through submitit and follow their Slurm state."""
    import logging

    if executor not in ("local", "slurm"):
        fail(f"--executor must be local or slurm, got {executor!r}", EXIT_USAGE)
    if executor == "slurm":
        return _slurm_worker(once, max_jobs, max_parallel, poll, heartbeat_expiry, grace, device, host_name,
                             partition, time_min, gpus_per_node, account, slurm_config, slurm_cluster, db)

    from rich.markup import escape

    from ctxsim.runner.gpus import detect_gpus, parse_gpus
    from ctxsim.runner.worker import LocalWorker

    with _errors():
        ids = parse_gpus(gpus)
    if ids is None:
        ids = detect_gpus()
    for name, v in (("--poll", poll), ("--heartbeat-expiry", heartbeat_expiry)):
        if v <= 0:
            fail(f"{name} must be > 0", EXIT_USAGE)
    if max_parallel is not None and max_parallel < 1:
        fail("--max-parallel must be >= 1", EXIT_USAGE)
    reg = open_registry_or_exit(db)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = LocalWorker(reg, ids, max_parallel=max_parallel, poll_s=poll, heartbeat_expiry_s=heartbeat_expiry,
                    grace_s=grace, once=once, max_jobs=max_jobs, device=device, host_name=host_name,
                    on_message=lambda m: info(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
    w.install_signal_handlers()
    with _errors(reg):
        n = w.run()
    info(f"worker {w.id}: started {n} job(s); exiting")


def _slurm_worker(once, max_jobs, max_parallel, poll, heartbeat_expiry, grace, device, host_name,
                  partition, time_min, gpus_per_node, account, slurm_config, slurm_cluster, db) -> None:
    """``ctxsim worker --executor slurm``: the submitit poller (ctxsim.runner.slurm)."""
    import logging

    from rich.markup import escape

    from ctxsim.runner.slurm import SlurmOptions, SlurmWorker

    for name, v in (("--poll", poll), ("--heartbeat-expiry", heartbeat_expiry)):
        if v <= 0:
            fail(f"{name} must be > 0", EXIT_USAGE)
    over = {"partition": partition, "time_min": time_min, "gpus_per_node": gpus_per_node, "account": account,
            "cluster": slurm_cluster}
    with _errors():
        opts = (SlurmOptions.from_file(slurm_config, **over) if slurm_config
                else SlurmOptions.from_dict({k: v for k, v in over.items() if v is not None}))
    reg = open_registry_or_exit(db)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = SlurmWorker(reg, opts, max_parallel=max_parallel or 64, poll_s=poll, heartbeat_expiry_s=heartbeat_expiry,
                    grace_s=grace, once=once, max_jobs=max_jobs, device=device, host_name=host_name,
                    on_message=lambda m: info(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
    w.install_signal_handlers()
    with _errors(reg):
        n = w.run()
    info(f"slurm worker {w.id}: submitted {n} job(s); exiting")


def _fmt_num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4g}"


def ls(
    status: Annotated[Optional[str], typer.Option("--status", "-s", help="Statuses, comma-separated (queued,running,done,failed,cancelled).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Newest N jobs only.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table (full values when piped) or tsv (one tab-separated line per job).")] = "table",
    json_: JsonOpt = False,
    db: Optional[str] = DbOption,
) -> None:
    """List jobs, newest first, with progress, last loss and best R@1 (percent; --json: fractions)."""
    from ctxsim.registry.models import JOB_STATUSES

    statuses = _split(status) if status else None
    bad = [s for s in statuses or [] if s not in JOB_STATUSES]
    if bad:
        fail(f"unknown status {bad[0]!r} (one of {', '.join(JOB_STATUSES)})", EXIT_USAGE)
    if fmt not in ("table", "tsv"):
        fail(f"--format must be table or tsv (or --json), got {fmt!r}", EXIT_USAGE)
    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.queries import runs_table

    with _errors(reg):
        rows = runs_table(reg, status=statuses, dataset=dataset, loss=loss, limit=limit)
    if json_:
        print_json(rows)
        return
    from rich.markup import escape

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
        if not tsv:
            line = [escape(v) for v in line]
            line[1] = f"[{colors.get(r['status'], 'white')}]{line[1]}[/]"
        cells.append(line)
    print_rows(header, cells, fmt=fmt, no_wrap=("id", "status"))
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
    db: Optional[str] = DbOption,
) -> None:
    """A job's state, config, provenance, summaries (retrieval metrics in percent) and recent events."""
    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.queries import job_detail, job_events

    with _errors(reg):
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
    db: Optional[str] = DbOption,
) -> None:
    """Print a job's stdout/stderr (``<run_dir>/stdout.log``); ``-f`` follows it until the job ends."""
    import sys

    reg = open_registry_or_exit(db, readonly=True)
    from ctxsim.registry.db import read_registry
    from ctxsim.registry.jobs import job_states
    from ctxsim.registry.queries import job_detail
    from ctxsim.runner.logs import LogFollower, job_log_path

    ro = read_registry(reg)
    with _errors(ro):
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
            with _errors(ro):
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
    db: Optional[str] = DbOption,
) -> None:
    """Cancel a job: a queued job at once; a running one is stopped by its worker within seconds."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    with _errors(reg):
        state = jobs.cancel(reg, job_id)
    if json_:
        print_json({"id": job_id, "state": state})
    else:
        info(f"job {job_id}: {JobStatus.CANCELLED if state == JobStatus.CANCELLED else 'cancel requested (its worker stops it)'}")


def retry(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    keep_attempts: Annotated[bool, typer.Option("--keep-attempts", help="Keep the attempt count (default: reset to 0).")] = False,
    json_: JsonOpt = False,
    db: Optional[str] = DbOption,
) -> None:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    with _errors(reg):
        jobs.retry(reg, job_id, reset_attempts=not keep_attempts)
    if json_:
        print_json({"id": job_id, "state": JobStatus.QUEUED})
    else:
        info(f"job {job_id}: queued again")


def priority(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    value: Annotated[int, typer.Argument(help="New priority (higher runs first; may be negative).")],
    json_: JsonOpt = False,
    db: Optional[str] = DbOption,
) -> None:
    """Change a queued job's priority (workers take the highest priority first, then the oldest)."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    with _errors(reg):
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
    db: Optional[str] = DbOption,
) -> None:
    """Remove a job and its metrics, summaries, events and tags from the registry."""
    reg = open_registry_or_exit(db)
    from ctxsim.registry import jobs

    with _errors(reg):
        run_dir = jobs.rm(reg, job_id, force=force, purge=purge, stop_timeout_s=wait)
    if json_:
        print_json({"id": job_id, "removed": True, "run_dir": run_dir, "purged": bool(purge)})
    else:
        info(f"job {job_id}: removed" + (f" (deleted {run_dir})" if purge and run_dir else ""))


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("sweep")(sweep)
    app.command("worker")(worker)
    app.command("ls")(ls)
    app.command("show")(show)
    app.command("logs")(logs)
    app.command("cancel")(cancel)
    app.command("retry")(retry)
    app.command("priority")(priority)
    app.command("rm")(rm)
