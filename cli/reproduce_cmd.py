"""`ctxsim reproduce`: queue the runs a paper table still lacks (issue 13). Thin: ctxsim.report.reproduce."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctxsim.cli.common import err_console, fail, info, open_registry_or_exit, print_json
from ctxsim.cli.options import DbOpt, executor_option, json_option


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def reproduce(
    table: Annotated[int, typer.Option("--table", help="The paper table: 224 (Tables 2/3) or 256 (appendix Table 4).")],
    datasets: Annotated[Optional[str], typer.Option("--datasets", "-d", help="Only these datasets (comma-separated; default: the table's).")] = None,
    losses: Annotated[Optional[str], typer.Option("--losses", "-l", help="Only these methods (comma-separated; default: the table's).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Runs wanted per cell (finished or pending).")] = 3,
    root: Annotated[Optional[str], typer.Option("--root", help="Dataset root folder of the queued runs.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be queued; queue nothing.")] = False,
    gpus_per_job: Annotated[Optional[int], typer.Option("--gpus-per-job", help="GPUs each job needs (default: 1 if a GPU is visible here, else 0).")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first.")] = 0,
    executor: executor_option("local (ctxsim worker) or slurm.") = "local",
    as_json: json_option("Print JSON only.") = False,
    db: DbOpt = None,
) -> None:
    """Queue every cell of a paper table (its methods that ctxsim has recipes for, reference profile)
    that has fewer than --seeds finished or pending runs; running it again queues nothing."""
    from ctxsim.report.reproduce import reproduce as run_reproduce

    if gpus_per_job is None:
        from ctxsim.runner.gpus import detect_gpus

        gpus_per_job = 1 if detect_gpus(use_torch=False) else 0
    if gpus_per_job < 0:
        fail("--gpus-per-job must be >= 0")
    reg = open_registry_or_exit(db)
    plans, untrained = run_reproduce(reg, table, _csv_list(datasets), _csv_list(losses), seeds=seeds, root=root,
                                     dry_run=dry_run, n_gpus=gpus_per_job, priority=priority, executor=executor)
    n_new = sum(len(p.new_seeds) for p in plans)
    if as_json:
        print_json({"table": table, "dry_run": dry_run, "seeds": seeds, "cells": [p.to_dict() for p in plans],
                    "untrained": [u.to_dict() for u in untrained]})
        return
    from rich.table import Table

    t = Table(title=f"Table {table}: {len(plans)} cell(s)", show_edge=False)
    for c in ("dataset", "method", "done", "pending", "would queue seeds" if dry_run else "queued"):
        t.add_column(c)
    for p in plans:
        new = " ".join(map(str, p.new_seeds)) if dry_run else " ".join(f"#{j} (seed {s})" for j, s in zip(p.queued, p.new_seeds))
        t.add_row(p.dataset, p.loss, str(len(p.done)), str(len(p.pending)), new or "—")
    err_console.print(t)
    new_u = [u for u in untrained if u.existing is None]
    there = ", ".join(f"{u.dataset} (#{u.existing})" for u in untrained if u.existing is not None)
    if dry_run:
        info(f"would queue {n_new} run(s) and {len(new_u)} untrained baseline(s)"
             + (f" ({', '.join(u.dataset for u in new_u)})" if new_u else "") + "; nothing queued (--dry-run)")
    else:
        info(f"{n_new} run(s) queued" if n_new else f"nothing to queue: every cell has {seeds} finished or pending run(s)")
        if new_u:
            info("untrained baselines queued (Δ untrained in compare): "
                 + ", ".join(f"{u.dataset} #{u.queued}" for u in new_u))
    if there:
        info(f"untrained baselines already queued or done: {there}")


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
