"""``ctxsim tune``: hyperparameter studies on Optuna whose trials are registry jobs (issue 16).

    ctxsim tune --dataset D --loss L --study NAME --trials N --space "lr=loguniform(1e-5,1e-3)" \\
        --space "loss.lam=uniform(0,1)" [--objective MAP@R] [--parallel K] [--local]
    ctxsim tune show NAME [--json]      (no NAME: every study with its best so far)

Trials select on the validation classes only (the config needs ``val_classes``). Ctrl-C leaves the
study as it is; rerunning the same command continues it. Exit codes: 0 ok, 1 trials kept failing,
2 bad input, 3 registry unusable, 4 no such study, 130 interrupted.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, console, fail, info, open_registry_or_exit, print_json
from ctxsim.cli.options import DbOpt, JsonOpt, RecipeOpt, ResolutionOpt, TrackOpt, device_option, track_names
from ctxsim.names import fmt_with_unit

app = typer.Typer(help="Tune hyperparameters on validation classes with Optuna (trials are registry jobs).",
                  no_args_is_help=False, invoke_without_command=True)


@app.callback(invoke_without_command=True)
def tune(
    ctx: typer.Context,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset to tune on.")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="Loss to tune.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (rerun the same name to continue it).")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="Finished trials the study should reach.")] = 20,
    space: Annotated[Optional[list[str]], typer.Option("--space", help="key=kind(args): uniform, loguniform, int, logint, choice (repeatable).")] = None,
    objective: Annotated[str, typer.Option("--objective", help="Validation metric to maximise.")] = "MAP@R",
    parallel: Annotated[int, typer.Option("--parallel", "-k", help="Trials kept queued/running for workers.")] = 1,
    local: Annotated[bool, typer.Option("--local", help="Run the trials in this process, one at a time.")] = False,
    pruner: Annotated[str, typer.Option("--pruner", help="median (stop trials below the median) or none.")] = "median",
    resolution: ResolutionOpt = None,
    recipe: RecipeOpt = None,
    track: TrackOpt = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value on the base config (repeatable), e.g. val_classes=2.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override the recipe's epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Training seed of every trial.")] = None,
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of Optuna's TPE sampler.")] = 0,
    root: Annotated[Optional[str], typer.Option("--root", help="Dataset root folder.")] = None,
    gpus_per_job: Annotated[Optional[int], typer.Option("--gpus-per-job", help="GPUs each trial needs (default: 1 if a GPU is visible here, else 0).")] = None,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at the trials' jobs.")] = 2.0,
    device: device_option("--local: auto, cpu or cuda.") = "auto",
    db: DbOpt = None,
) -> None:
    """Run (or continue) a study; `ctxsim tune show NAME` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [f for f, v in (("--dataset", dataset), ("--loss", loss), ("--study", study)) if not v]
    if missing:
        fail(f"{', '.join(missing)} required (or: ctxsim tune show NAME)")
    if poll <= 0:
        fail("--poll must be > 0")
    import optuna

    from ctxsim.train.configure import configure
    from ctxsim.tuning import Tuner, build_spec
    from ctxsim.tuning.study import default_pruner

    base = configure(dataset, loss, resolution, root=root, sets=list(set_ or []), epochs=epochs, seed=seed,
                     recipe_family=recipe)
    if track is not None:
        base = base.with_overrides(track=track_names(track))
    if gpus_per_job is None:
        from ctxsim.runner.gpus import detect_gpus

        gpus_per_job = 1 if detect_gpus(use_torch=False) else 0
    spec = build_spec(study, base, list(space or []), trials, objective=objective, parallel=parallel, local=local,
                      gpus_per_job=gpus_per_job)
    the_pruner = default_pruner(pruner)
    from ctxsim.train.sweep import preflight_grid
    from ctxsim.tuning.space import corner_configs

    preflight_grid(corner_configs(spec.params, base))  # as run and sweep: a trial that could never start is exit 2, no rows
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reg = open_registry_or_exit(db)
    try:
        tuner = Tuner(reg, spec, sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=the_pruner,
                      poll_s=poll, say=info, device=device)
        info(f"study {spec.study}: {tuner.result().finished} of {spec.trials} trials finished; "
             + ("running the rest here" if local else f"keeping {parallel} queued for workers (ctxsim worker)"))
        res = tuner.run()
    except KeyboardInterrupt:
        info(f"interrupted: study {spec.study} kept; rerun the same command to continue it")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    best = (f"best {objective} {fmt_with_unit(objective, res.best_value)} (job {res.best_job}): "
            + " ".join(f"{k}={v}" for k, v in res.best_params.items())) if res.best_value is not None else "no complete trial"
    console.print(f"study {res.study}: {res.finished} finished ({res.complete} complete, {res.pruned} pruned, "
                  f"{res.failed} failed); {best}", highlight=False, soft_wrap=True)
    if not res.complete:
        info("no trial completed (see `ctxsim tune show " + res.study + "` and `ctxsim ls`)")
        raise typer.Exit(EXIT_FAILED)


@app.command("show")
def show(
    name: Annotated[Optional[str], typer.Argument(help="Study name (none: list the studies).")] = None,
    json_: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Trials, best value and parameters, and parameter importances of a study."""
    import optuna

    from ctxsim.tuning import list_studies, study_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reg = open_registry_or_exit(db, create=False)
    data = study_summary(reg, name) if name else {"studies": list_studies(reg)}
    if json_:
        print_json(data)
        return
    if not name:
        _studies_table(data["studies"])
    else:
        _study_text(data)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _studies_table(rows: list[dict]) -> None:
    from rich.table import Table

    if not rows:
        info("no study in this registry yet (ctxsim tune --study NAME ...)")
        return
    t = Table("study", "dataset", "loss", "objective", "trials", "best", "best params")
    for r in rows:
        t.add_row(r["study"], _fmt(r["dataset"]), _fmt(r["loss"]), _fmt(r["objective"]), str(r["trials"]),
                  fmt_with_unit(r["objective"], r["best_value"]), " ".join(f"{k}={_fmt(v)}" for k, v in r["best_params"].items()))
    console.print(t)


def _study_text(d: dict) -> None:
    from rich.table import Table

    s = d["settings"]
    console.print(f"study {d['study']}: {s.get('dataset')}/{s.get('loss')}, maximise validation {s.get('objective')}; "
                  f"space {' '.join(s.get('space') or [])}", highlight=False, soft_wrap=True)
    keys = sorted({k for r in d["trials"] for k in r["params"]})
    t = Table("trial", "state", "value", *keys, "job", "job status")
    for r in d["trials"]:
        t.add_row(str(r["number"]), r["state"], fmt_with_unit(s.get("objective"), r["value"]), *(_fmt(r["params"].get(k)) for k in keys),
                  _fmt(r["job_id"]), _fmt(r["job_status"]))
    console.print(t)
    b = d["best"]
    if b:
        console.print(f"best: trial {b['number']} (job {b['job_id']}) value {fmt_with_unit(s.get('objective'), b['value'])}: "
                      + " ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items()), highlight=False)
    else:
        console.print("best: no complete trial yet", highlight=False)
    if d["importances"]:
        console.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in d["importances"].items()), highlight=False)
    elif d["note"]:
        console.print(d["note"], highlight=False)


def register(root: typer.Typer) -> None:
    """Adds ``tune`` (with ``tune show``) to the root app."""
    root.add_typer(app, name="tune")
