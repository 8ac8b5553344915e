"""``ctxsim worker``: run queued jobs here (``ctxsim.runner.worker``) or submit them to Slurm
(``ctxsim.runner.slurm``). This module declares the options, checks them and starts the loop."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_USAGE, fail, info, open_registry_or_exit
from ctxsim.cli.options import DbOpt, device_option, executor_option, track_names


def worker(
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids this worker owns (0,1,...); '' for CPU only; default: all detected.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain the queue, then exit: when no queued job fits this worker and none it "
        "could take over is running elsewhere.")] = False,
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", help="Exit after starting this many jobs (and finishing them).")] = None,
    max_parallel: Annotated[Optional[int], typer.Option("--max-parallel", help="Jobs run at once (default: number of GPUs, at least 1).")] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between queue polls.")] = 2.0,
    heartbeat_expiry: Annotated[float, typer.Option("--heartbeat-expiry", help="Seconds without heartbeat before a running job is re-queued.")] = 60.0,
    grace: Annotated[float, typer.Option("--grace", help="Seconds between SIGTERM and SIGKILL when stopping a job.")] = 10.0,
    device: device_option("Device passed to each job: auto, cpu or cuda.") = "auto",
    host_name: Annotated[Optional[str], typer.Option("--host-name", help="Host name recorded on the jobs this worker runs (default: this machine's).")] = None,
    executor: executor_option("local: run jobs here; slurm: submit jobs queued with --executor slurm through submitit.") = "local",
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm: Partition.")] = None,
    time_min: Annotated[Optional[int], typer.Option("--time", help="Slurm: Time limit per job, minutes (requeued from its checkpoint when hit).")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", help="Slurm: GPUs a node has: jobs needing more stay queued.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm: Account to charge.")] = None,
    slurm_config: Annotated[Optional[str], typer.Option(
        "--slurm-config", help="Slurm: TOML/JSON file of options (partition, time, gpus_per_node, account, qos, "
        "constraint, cpus_per_task, mem_gb, signal_delay_s, max_num_timeout, additional, folder, cluster); "
        "see docs/cluster.md.")] = None,
    slurm_cluster: Annotated[Optional[str], typer.Option("--slurm-cluster", help="Slurm: slurm (default where sbatch exists) or local (submitit's local "
        "executor: tests, a workstation).")] = None,
    track: Annotated[Optional[str], typer.Option(
        "--track", help="Mirror every job this worker runs to these trackers too (tensorboard, mlflow, wandb; "
        "added to each job's own config key track).")] = None,
    db: DbOpt = None,
) -> None:
    """Run queued jobs: each in its own process group with CUDA_VISIBLE_DEVICES set; heartbeats,
    cancels, re-queues jobs of dead workers. SIGTERM/Ctrl-C re-queues the running jobs.
    With --executor slurm: submit jobs marked slurm through submitit and follow their Slurm state."""
    import logging

    from rich.markup import escape

    for name, v in (("--poll", poll), ("--heartbeat-expiry", heartbeat_expiry)):
        if v <= 0:
            fail(f"{name} must be > 0", EXIT_USAGE)
    if track is not None:
        import os

        from ctxsim.errors import CtxsimError
        from ctxsim.names import require_trackers
        from ctxsim.runner.job import WORKER_TRACK_ENV

        names = track_names(track)
        try:
            require_trackers(names)  # a missing extra: one line with the pip command, before any job starts
        except CtxsimError as e:
            fail(str(e), EXIT_USAGE)
        os.environ[WORKER_TRACK_ENV] = ",".join(names)  # inherited by each job process (and Slurm task)
    common = dict(poll_s=poll, heartbeat_expiry_s=heartbeat_expiry, grace_s=grace, once=once, max_jobs=max_jobs,
                  device=device, host_name=host_name,
                  on_message=lambda m: info(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(m)}"))
    if executor == "slurm":
        from ctxsim.runner.slurm import SlurmOptions, SlurmWorker

        over = {"partition": partition, "time_min": time_min, "gpus_per_node": gpus_per_node, "account": account,
                "cluster": slurm_cluster}
        opts = (SlurmOptions.from_file(slurm_config, **over) if slurm_config
                else SlurmOptions.from_dict({k: v for k, v in over.items() if v is not None}))
        reg = open_registry_or_exit(db)
        from ctxsim.registry.fs import sqlite_on_network_fs

        shared_sqlite = sqlite_on_network_fs(reg.url)
        if shared_sqlite:
            info(f"[yellow]warning:[/] {escape(shared_sqlite)}")
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        w = SlurmWorker(reg, opts, max_parallel=max_parallel or 64, **common)
        w.install_signal_handlers()
        n = w.run()
        info(f"slurm worker {w.id}: submitted {n} job(s); exiting")
        return

    from ctxsim.runner.gpus import detect_gpus, parse_gpus
    from ctxsim.runner.worker import LocalWorker

    ids = parse_gpus(gpus)
    if ids is None:
        ids = detect_gpus()
    if max_parallel is not None and max_parallel < 1:
        fail("--max-parallel must be >= 1", EXIT_USAGE)
    reg = open_registry_or_exit(db)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = LocalWorker(reg, ids, max_parallel=max_parallel, **common)
    w.install_signal_handlers()
    n = w.run()
    info(f"worker {w.id}: started {n} job(s); exiting")


def register(app: typer.Typer) -> None:
    """Adds ``worker`` to the root app."""
    app.command("worker")(worker)
