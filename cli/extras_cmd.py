"""``ctxsim import-reference`` (the authors' released models as ctxsim checkpoints), ``ctxsim toy``
(the 2-D concentric-circles experiment) and ``ctxsim ablation-table`` (the §8 ablation grid laid
out like the paper's table). Thin: parse, call ``ctxsim.reference``, print. No torch at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import (
    EXIT_NOT_FOUND,
    console,
    fail,
    fmt_metric,
    info,
    open_registry_or_exit,
    print_json,
    print_rows,
)
from ctxsim.cli.options import DbOpt, device_option, json_option

JsonOpt = json_option("Print the result as JSON only (on stdout).")


def import_reference_cmd(
    file: Annotated[Path, typer.Argument(help="A model file saved by the reference's main.py (release v1.0.0).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="cub, cars (CUB_Network) or sop, inat, inshop (SOP_Network).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Checkpoint to write (default: FILE with .ctxsim.pt).")] = None,
    evaluate: Annotated[bool, typer.Option("--eval", help="Also evaluate it on the test split and record it in the registry (for ctxsim compare).")] = False,
    root: Annotated[Optional[str], typer.Option("--root", help="Parent folder of the datasets (with --eval).")] = None,
    device: device_option("auto, cpu or cuda (with --eval).") = "auto",
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a released reference model into a ctxsim checkpoint, without running its pickle."""

    if not file.is_file():
        fail(f"no such file: {file}", EXIT_NOT_FOUND)
    from ctxsim.reference.import_reference import evaluate_reference_checkpoint, import_reference

    res = import_reference(file, dataset, out=out)
    result = res.to_dict()
    if not json_out:
        info(f"{file.name}: {res.network} ({res.pooling} pooling{', LayerNorm' if res.layernorm else ''}, "
             f"{res.embedding_size}-d), {res.n_tensors} tensors; ctxsim model matches it to "
             f"{res.max_abs_diff:.1e} on a random {tuple(res.check_input)} batch")
        info(f"wrote {res.checkpoint}  (evaluate: ctxsim eval {res.checkpoint} --dataset {res.dataset} --root DIR)")
    if evaluate:
        reg = open_registry_or_exit(db)
        job_id, metrics = evaluate_reference_checkpoint(reg, res.checkpoint, root=root, device=device)
        result.update(job_id=job_id, metrics=metrics)
        if not json_out:
            from rich.table import Table

            t = Table(title=f"{res.checkpoint.name} on {res.dataset} (job {job_id})")
            t.add_column("metric")
            t.add_column("value", justify="right")
            for k, v in metrics.items():
                t.add_row(k, f"{100 * v:.2f}")
            console.print(t)
            info(f"recorded as job {job_id}: ctxsim compare {job_id}")
    if json_out:
        print_json(result)


def toy_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for toy.png and toy.json.")] = Path("toy"),
    steps: Annotated[int, typer.Option("--steps", help="SGD steps per loss; 20000 reproduces the notebook's finding (the "
        "2000 default is a quick look).")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data, initial weights and batches.")] = 0,
    noise: Annotated[float, typer.Option("--noise", help="Radial noise σ (default: ring spacing / 5).")] = 0.04,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Record both runs in the registry.")] = True,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Contrastive vs contextual loss on 5 noisy concentric circles (docs/reference-implementation.md §8), on the CPU."""

    if steps <= 0:
        fail(f"--steps must be > 0, got {steps}")
    if noise < 0:
        fail(f"--noise must be >= 0, got {noise}")
    reg = open_registry_or_exit(db) if record else None
    from ctxsim.reference.toy import run_toy

    if json_out:
        result = run_toy(out, steps=steps, seed=seed, reg=reg, noise=noise)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(loss: str, step: int, total: int) -> None:
                if loss not in tasks:
                    tasks[loss] = bar.add_task(loss, total=total)
                if step % 50 == 0 or step == total:
                    bar.update(tasks[loss], completed=step)

            result = run_toy(out, steps=steps, seed=seed, reg=reg, noise=noise, progress=progress)
    summary = result.summary()
    if json_out:
        print_json(summary)
        return
    rows = [[r.cfg["loss"], str(result.job_ids[i]) if result.job_ids else "-", fmt_metric("R@1", r.initial["R@1"], 1),
             fmt_metric("R@1", r.final["R@1"], 1), fmt_metric("MAP@R", r.final["MAP@R"], 1), f"{r.losses[-1]:.4f}",
             f"{r.seconds:.1f}"] for i, r in enumerate(result.runs)]
    print_rows(["loss", "job", "R@1 before %", "R@1 after %", "MAP@R after %", "last loss", "seconds"], rows,
               title=f"toy: 5 circles, {steps} steps, seed {seed} (held-out R@1 chance = 20%)")
    console.print(summary["verdict"])  # which setting reproduces the reference notebook's finding
    info(f"wrote {result.png}")


def ablation_table_cmd(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset of the ablation runs.")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="224 or 256.")] = None,
    ids: Annotated[Optional[list[int]], typer.Argument(help="Job ids (default: every finished hybrid run of the dataset).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    db: DbOpt = None,
) -> None:
    """The contextual-similarity ablations (docs/reference-implementation.md §8) as the paper's table: R@1, MAP@R, Δ to default."""

    if fmt not in ("table", "markdown", "json"):
        fail(f"--format must be table, markdown or json; got {fmt!r}")
    if not ids and not dataset:
        fail("give job ids or --dataset")
    reg = open_registry_or_exit(db, create=False)
    from ctxsim.reference.ablation import ablation_display, ablation_markdown, ablation_rows_from_registry

    rows = ablation_rows_from_registry(reg, dataset=dataset, resolution=resolution, ids=ids or None)
    if fmt == "json":
        print_json(rows)
        return
    if not rows:
        fail("no finished hybrid runs match", EXIT_NOT_FOUND)
    if fmt == "markdown":
        typer.echo(ablation_markdown(rows), nl=False)
        return
    from rich.table import Table

    headers, cells = ablation_display(rows)
    t = Table(title=f"contextual-similarity ablations{f' on {dataset}' if dataset else ''} (percent; Δ in points vs #0)")
    for h in headers:
        t.add_column(h, justify="left" if h in ("Variant", "Removes") else "right", overflow="fold")
    for line in cells:
        t.add_row(*line)
    console.print(t)
    if len(rows) == 1 or 0 not in {r["id"] for r in rows}:
        info("no default (#0) run among them: deltas need one")


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("import-reference")(import_reference_cmd)
    app.command("toy")(toy_cmd)
    app.command("ablation-table")(ablation_table_cmd)
