"""`ctxsim baselines`, `ctxsim compare`, `ctxsim report`: runs versus the paper's numbers (issue 7).

Thin: parse, call ctxsim.baselines / ctxsim.report, print. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    console,
    fail,
    info,
    open_registry_or_exit,
    print_json,
)
from ctxsim.cli.options import DbOpt, json_option
from ctxsim.registry.states import JobStatus


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def _wide_console():
    """The shared console on a terminal; a wide one when piped (tables are not cut to 80 columns)."""
    if console.is_terminal:
        return console
    from rich.console import Console

    return Console(width=200, highlight=False)


def _dataset(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    from ctxsim.baselines import normalize_dataset
    from ctxsim.names import DATASETS

    ds = normalize_dataset(name)
    if ds is None:
        fail(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})", EXIT_USAGE)
    return ds


def _loss(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    from ctxsim.names import canonical_loss as normalize_loss

    return normalize_loss(name)


def baselines(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset (cub, cars, sop, inat, inshop, ...).")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", "-r", help="Only this resolution (rows without one match any).")] = None,
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="A ctxsim loss (ms_miner) or a method name (MS+miner).")] = None,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="Only these provenance kinds (repeatable).")] = None,
    curves: Annotated[bool, typer.Option("--curves", help="Include the learning-curve rows (kind reference_log_curve).")] = False,
    import_file: Annotated[Optional[Path], typer.Option("--import", help="Validate and add the rows of a CSV file (columns "
        "resolution,dataset,method,metric,value,kind,source).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="With --import: a row for a cell (resolution, dataset, method, metric, kind) that already has a "
        "different imported number replaces it (refused otherwise).")] = False,
    as_json: json_option("Print JSON only.") = False,
    db: DbOpt = None,
) -> None:
    """List the stored reference numbers (percent) with their provenance, or import more."""
    from ctxsim.baselines import KINDS, import_baselines, list_baselines, read_baseline_file

    ds = _dataset(dataset)
    for k in kind or []:
        if k not in KINDS:
            fail(f"unknown kind {k!r} (one of: {', '.join(KINDS)})")
    reg = open_registry_or_exit(db)
    if import_file is not None:

        added, skipped = import_baselines(reg, read_baseline_file(import_file), replace=replace)
        if as_json:
            print_json({"file": str(import_file), "added": added, "skipped": skipped})
        else:
            info(f"imported {added} row(s) from {import_file}" + (f" ({skipped} already stored)" if skipped else ""))
        return
    kinds = tuple(kind) if kind else tuple(k for k in KINDS if curves or k != "reference_log_curve")
    rows = list_baselines(reg, dataset=ds, resolution=resolution, method=method, kinds=kinds)
    if as_json:
        print_json(rows)
        return
    if not rows:
        info("no reference numbers match")
        return
    from rich.table import Table

    t = Table(title="Reference numbers (percent)", show_lines=False)
    for col, just in (("dataset", "left"), ("res.", "right"), ("method", "left"), ("loss", "left"),
                      ("metric", "left"), ("value", "right"), ("kind", "left"), ("origin", "left"),
                      ("source", "left")):
        t.add_column(col, justify=just, overflow="fold")
    for r in rows:
        t.add_row(r["dataset"], str(r["resolution"] or "—"), r["method"], r["loss"] or "—", r["metric"],
                  f"{r['value']:g}", r["kind"], r["origin"], r["source"])
    _wide_console().print(t)


def compare(
    ids: Annotated[Optional[list[int]], typer.Argument(help="Job ids (default: every finished run that matches the filters).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset.")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="Only this loss.")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", "-r", help="Only this resolution.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", help="Metrics to show (repeatable; default: every R@K/MAP@R/RP the runs have).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    as_json: json_option("Same as --format json.") = False,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Job statuses to include without ids (repeatable; default done).")] = None,
    test: Annotated[Optional[tuple[str, str]], typer.Option("--test", help="A B: paired bootstrap of A - B in R@1 and MAP@R (job ids or "
        "groups like cub/hybrid/256).")] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="With --test: bootstrap resamples.")] = 10_000,
    test_seed: Annotated[int, typer.Option("--test-seed", help="With --test: seed of the bootstrap's random draws.")] = 0,
    table: Annotated[Optional[int], typer.Option("--table", help="224 or 256: the paper's table layout, published number and ours per cell.")] = None,
    datasets: Annotated[Optional[str], typer.Option("--datasets", help="With --table: only these datasets (comma-separated).")] = None,
    losses: Annotated[Optional[str], typer.Option("--losses", help="With --table: only these methods (comma-separated).")] = None,
    db: DbOpt = None,
) -> None:
    """Runs' final and best metrics (mean ± std and 95% CI over seeds) against the paper's numbers,
    with deltas for the runs that are comparable; --test A B for a paired significance test, --table
    224|256 for the paper's table layout."""
    from ctxsim.registry.models import JOB_STATUSES
    from ctxsim.report.compare import gather_runs, rows_of
    from ctxsim.report.render import display_table, to_csv, to_json, to_markdown

    if as_json:
        fmt = Format.json
    if test is not None and table is not None:
        fail("give --test or --table, not both")
    if test is not None:
        _paired_test(test, resamples, test_seed, fmt, db)
        return
    if table is not None:
        _paper_table(table, datasets, losses, (metric or ["R@1"])[0], fmt, db)
        return
    ds, loss = _dataset(dataset), _loss(loss)
    for s in status or []:
        if s not in JOB_STATUSES:
            fail(f"unknown status {s!r} (one of: {', '.join(JOB_STATUSES)})")
    if resolution is not None and resolution <= 0:
        fail(f"resolution must be positive, not {resolution}")
    reg = open_registry_or_exit(db, readonly=True)  # reads (an untrained baseline is written through its own handle)
    jobs = gather_runs(reg, ids or None, ds, loss, resolution, tuple(status) if status else (JobStatus.DONE,))
    _untrained_baselines(jobs, db)
    rows = rows_of(reg, jobs, metric or None)
    if not rows:
        info("no runs with evaluation metrics match" + ("" if ids else " (finished runs only; see --status)"))
    if fmt is Format.json:
        sys.stdout.write(to_json(rows))
    elif fmt is Format.csv:
        sys.stdout.write(to_csv(rows))
    elif fmt is Format.markdown:
        if rows:
            sys.stdout.write(to_markdown(rows))
    elif rows:
        from ctxsim.report.render import NUMERIC_COLUMNS

        header, cells, notes = display_table(rows, compact=True)
        _print_table("Runs vs reference numbers (percent)", header, cells, notes,
                     right=lambda h: h in NUMERIC_COLUMNS, keep_whole=True)
    sys.stdout.flush()


def _untrained_baselines(jobs: list, db: Optional[str]) -> None:
    """Computes the missing untrained baselines that take seconds (data in memory), with a progress
    bar; for the others (and where this registry cannot be written), says how to compute them."""
    from ctxsim.baselines.untrained import CHEAP_DATASETS, find_untrained, how_to_compute

    keys = {j["untrained_key"]: j for j in jobs if j.get("untrained_key")}
    if not keys:
        return
    have = find_untrained(open_registry_or_exit(db, readonly=True), list(keys))
    missing = [j for k, j in keys.items() if k not in have]
    cheap = [j for j in missing if j["dataset"] in CHEAP_DATASETS]
    hints = [how_to_compute(j["dataset"], j["config"]) for j in missing if j["dataset"] not in CHEAP_DATASETS]
    if cheap and not _compute_untrained(cheap, db):
        hints = [how_to_compute(j["dataset"], j["config"]) for j in cheap] + hints
    for h in dict.fromkeys(hints):
        info(f"Δ untrained needs a baseline: {h}")


def _compute_untrained(jobs: list, db: Optional[str]) -> bool:
    """The baselines of ``jobs`` computed and recorded, with a progress bar; False (and why, one
    line) where that failed, e.g. on a registry this user may only read."""
    from rich.markup import escape
    from rich.progress import Progress

    from ctxsim.baselines.untrained import ensure_untrained
    from ctxsim.cli.common import err_console
    from ctxsim.errors import CtxsimError
    from ctxsim.registry.db import open_registry

    reg = None
    try:
        reg = open_registry(db, create=False)
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("untrained baselines", total=len(jobs))

            def step(done: int, total: int, dataset: str) -> None:
                bar.update(task, completed=done, description=f"untrained baseline {dataset}".strip())

            ensure_untrained(reg, jobs, device="auto", on_progress=step)
        return True
    except CtxsimError as e:
        info(f"[yellow]untrained baselines not computed:[/] {escape(str(e))}")
        return False
    finally:
        if reg is not None:
            reg.dispose()


def _print_table(title: str, header: list[str], lines: list[list[str]], notes: list[str], right,
                 keep_whole: bool = False) -> None:
    """A rich table and its footnotes: ``right(h)`` right-aligns a column (and, with ``keep_whole``, never
    wraps it); piped output is not cut to 80 columns."""
    out = _wide_console()
    if not out.is_terminal:  # piped: aligned plain text, whole values, no layout engine (a second saved)
        from ctxsim.cli.common import print_rows

        print_rows(header, [[str(c) for c in line] for line in lines], title=title)
        for n in notes:
            sys.stdout.write(n + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        r = right(h)
        t.add_column(h, justify="right" if r else "left", no_wrap=r and keep_whole, overflow="fold")
    for line in lines:
        t.add_row(*line)
    out.print(t)
    for n in notes:
        out.print(n, highlight=False, soft_wrap=True)


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _paired_test(test: tuple[str, str], resamples: int, seed: int, fmt: Format, db: Optional[str]) -> None:
    from ctxsim.report.paired import format_paired_test, paired_test

    if resamples < 1:
        fail(f"--resamples must be >= 1, not {resamples}")
    if fmt not in (Format.table, Format.json):
        fail("--test prints a table or --format json")
    reg = open_registry_or_exit(db, readonly=True)  # reads only
    result = paired_test(reg, test[0], test[1], n_resamples=resamples, seed=seed)
    if fmt is Format.json:
        print_json(result)
        return
    out = _wide_console()
    for line in format_paired_test(result):
        out.print(line, highlight=False, soft_wrap=True)


def _paper_table(table: int, datasets: Optional[str], losses: Optional[str], metric: str, fmt: Format,
                 db: Optional[str]) -> None:
    from ctxsim.report.table import table_cells_text, table_data, table_markdown

    reg = open_registry_or_exit(db, readonly=True)  # reads only
    data = table_data(reg, table, _csv_list(datasets), _csv_list(losses), metric=metric)
    if fmt is Format.json:
        print_json(data)
    elif fmt is Format.markdown:
        sys.stdout.write(table_markdown(data))
    elif fmt is Format.csv:
        fail("--table prints a table, markdown or JSON")
    else:
        header, lines, notes = table_cells_text(data)
        _print_table(f"Table {data['resolution']}: {data['title']}, {data['metric']} (percent)", header, lines,
                     notes, right=lambda h: h != "Method")
    sys.stdout.flush()


def report(
    job_id: Annotated[Optional[int], typer.Argument(help="A job id.")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every finished run (or those matching --dataset/--loss).")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG files and index.md.")] = Path("report"),
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="With --all: only this dataset.")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="With --all: only this loss.")] = None,
    as_json: json_option("Print the written files as JSON.") = False,
    db: DbOpt = None,
) -> None:
    """PNG curves of loss and R@K per run and overlaid per dataset, with the paper's learning curve."""
    if (job_id is None) == (not all_runs):
        fail("give one job id or --all")
    ds, loss = _dataset(dataset), _loss(loss)
    reg = open_registry_or_exit(db, readonly=True)  # reads only
    from ctxsim.report.plots import write_report

    try:
        written = write_report(reg, out, ids=[job_id] if job_id is not None else None, dataset=ds, loss=loss)
    except OSError as e:
        fail(f"cannot write to {out}: {e.strerror or e}")
    if not written["runs"]:
        fail("no finished runs match", EXIT_NOT_FOUND)
    if as_json:
        print_json(written)
    else:
        for p in written["files"]:
            info(f"wrote {p}")


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("baselines")(baselines)
    app.command("compare")(compare)
    app.command("report")(report)
