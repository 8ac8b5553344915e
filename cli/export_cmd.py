"""``ctxsim export runs|curves``: tidy tables for pandas, R or a spreadsheet (``ctxsim.report.export``).
Thin: parse, call, write, say where."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, fail, info, open_registry_or_exit
from ctxsim.cli.options import DbOpt

export_app = typer.Typer(help="Tidy exports for analysis: one row per run, or every logged value.", no_args_is_help=True)

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="csv, parquet (needs pyarrow) or jsonl.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="File to write (replaced atomically).")]


def _check_format(fmt: str) -> None:
    from ctxsim.report.export import FORMATS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}", EXIT_USAGE)


def runs_cmd(
    out: OutOpt,
    fmt: FormatOpt = "csv",
    status: Annotated[Optional[str], typer.Option("--status", "-s", help="Statuses, comma-separated.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l")] = None,
    db: DbOpt = None,
) -> None:
    """One row per run: job columns, tags, every config key (config.*), every metric's best and last
    (<key>.best, <key>.last...; fractions, as in ls --json), comparability and provenance."""
    from ctxsim.registry.models import JOB_STATUSES
    from ctxsim.report.export import runs_records, write_records

    _check_format(fmt)
    statuses = [v.strip() for v in status.split(",") if v.strip()] if status else None
    bad = [s for s in statuses or [] if s not in JOB_STATUSES]
    if bad:
        fail(f"unknown status {bad[0]!r} (one of {', '.join(JOB_STATUSES)})", EXIT_USAGE)
    reg = open_registry_or_exit(db, readonly=True)
    records = runs_records(reg, status=statuses, dataset=dataset, loss=loss)
    write_records(records, out, fmt)
    info(f"wrote {out}: {len(records)} run(s), {len({k for r in records for k in r})} column(s)")


def curves_cmd(
    ids: Annotated[list[int], typer.Argument(help="Job ids.")],
    out: OutOpt,
    fmt: FormatOpt = "csv",
    key: Annotated[Optional[list[str]], typer.Option("--key", "-k", help="Only these metric keys (repeatable), "
                                                     "e.g. R@1, MAP@R, train/loss.")] = None,
    db: DbOpt = None,
) -> None:
    """The long table of every logged value of the runs: job_id, key, step, value, time."""
    from ctxsim.registry.queries import job_configs
    from ctxsim.report.export import curves_records, write_records

    _check_format(fmt)
    reg = open_registry_or_exit(db, readonly=True)
    missing = sorted(set(ids) - set(job_configs(reg, ids)))
    if missing:
        fail(f"no job {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), EXIT_NOT_FOUND)
    records = curves_records(reg, ids, key)
    write_records(records, out, fmt)
    info(f"wrote {out}: {len(records)} value(s) of {len(ids)} run(s)")


def register(app: typer.Typer) -> None:
    """Adds the ``export`` sub-app to the root app."""
    export_app.command("runs")(runs_cmd)
    export_app.command("curves")(curves_cmd)
    app.add_typer(export_app, name="export")
