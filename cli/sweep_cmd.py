"""``ctxsim sweep``: queue a grid of runs for workers. The grid is ``ctxsim.train.sweep`` (and
``ctxsim.reference.ablation`` for ``--ablation``); this module declares the options and prints."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_USAGE, console, fail, info, open_registry_or_exit, print_json, table_console
from ctxsim.cli.options import DbOpt, ExecutorOpt, JsonOpt, RecipeOpt, TrackOpt, track_names
from ctxsim.registry.states import JobStatus


def sweep(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Datasets, comma-separated (cub,cars).")],
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="Losses, comma-separated (hybrid,contrastive).")] = None,
    resolution: Annotated[Optional[str], typer.Option("--resolution", "-r", help="Recipe families: 224, 256 or 224,256 "
        "(default 256; 224 with --recipe vit-s16-224).")] = None,
    recipe: RecipeOpt = None,
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
    track: TrackOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Queue even if an identical config is queued or running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid without queueing anything.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the checks that depend on this machine (data, device) for workers elsewhere; they "
        "run them before training. The config checks still run.")] = False,
    executor: ExecutorOpt = "local",
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Queue a grid of runs (datasets x losses x resolutions x seeds x --set values) for workers.
    Every config is checked first (docs/architecture.md §4.2): one that could never start is one
    line and exit 2, and nothing is queued."""
    from ctxsim.train.sweep import build_grid, preflight_grid

    if ablation is not None:
        from ctxsim.reference.ablation import build_ablation_grid

        grid = build_ablation_grid(dataset, loss, resolution, seeds, list(set_ or []), epochs, root, ablation, profile)
    else:
        if not loss:
            fail("--loss is required (or --ablation for the contextual-similarity ablation grid)", EXIT_USAGE)
        grid = build_grid(dataset, loss, resolution, seeds, list(set_ or []), epochs, root, profile, recipe)
    if track is not None:
        names = track_names(track)
        grid = [(c.with_overrides(track=names), a) for c, a in grid]
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
    table_console(stderr=True).print(t)


def register(app: typer.Typer) -> None:
    """Adds ``sweep`` to the root app."""
    app.command("sweep")(sweep)
