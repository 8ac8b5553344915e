"""``ctxsim doctor``: the registry's integrity and schema, and jobs marked running that nothing runs
(``ctxsim.registry.doctor``); ``--fix`` puts those jobs back in the queue. Thin: parse, call, print."""

from __future__ import annotations

import shutil
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_FAILED, EXIT_REGISTRY, console, fail, info, open_registry_or_exit, print_json
from ctxsim.cli.options import DbOpt, JsonOpt


def _slurm_ended(slurm_ids: list[str]) -> dict[str, str]:
    """Of ``slurm_ids``, those whose Slurm job ended or is unknown, with their state."""
    from ctxsim.runner.slurm import state_action
    from ctxsim.runner.slurm_states import query_states

    return {sid: st for sid, st in query_states(slurm_ids).items() if state_action(st) != "active"}


def doctor_cmd(
    fix: Annotated[bool, typer.Option("--fix", help="Put jobs marked running that nothing runs back in the queue "
                                      "(or fail them, as the reaper would). Never deletes anything.")] = False,
    heartbeat_expiry: Annotated[float, typer.Option("--heartbeat-expiry", help="A running job silent this long "
                                                    "(seconds) has no worker: the reaper's bound.")] = 300.0,
    db: DbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check the registry: SQLite's integrity_check (or every PostgreSQL table read through), the
    schema version, and every running job against its heartbeat, its process on this host and its
    Slurm job. Exit 0 when all is well (or fixed), 1 when problems remain, 3 when the file is damaged."""
    from ctxsim.registry import doctor
    from ctxsim.registry.migrations import HEAD_REVISION
    from ctxsim.registry.models import SCHEMA_VERSION
    from ctxsim.registry.urls import damaged_registry, resolve_url, sqlite_file

    if heartbeat_expiry <= 0:
        fail("--heartbeat-expiry must be > 0")
    from sqlalchemy.engine import make_url

    url = resolve_url(db)
    path = sqlite_file(make_url(url))
    findings: list[doctor.Finding] = []
    if path is not None and path.is_file():
        findings += doctor.sqlite_integrity(path)
        bad = [f for f in findings if not f.ok]
        if bad:
            _show(findings, [], json_)
            fail(damaged_registry(str(path), bad[0].message.split(": ", 1)[-1]), EXIT_REGISTRY)
    reg = open_registry_or_exit(db, create=False, readonly=not fix)
    if reg.is_postgres:
        findings += doctor.postgres_integrity(reg)
    findings.append(doctor.Finding(True, "schema", f"schema version {SCHEMA_VERSION} (migration {HEAD_REVISION}): current"))
    findings += doctor.stuck_jobs(reg, heartbeat_expiry, slurm_ended=_slurm_ended if shutil.which("squeue") else None)
    fixed = doctor.fix_jobs(reg, findings) if fix else []
    _show(findings, fixed, json_)
    left = [f for f in findings if not f.ok and not (f.job_id is not None and any(j == f.job_id for j, _ in fixed))]
    reg.dispose()
    if left:
        if not json_:
            info(f"{len(left)} problem(s)" + ("" if fix else "; `ctxsim doctor --fix` requeues the stuck jobs"))
        raise typer.Exit(EXIT_FAILED)


def _show(findings: list, fixed: list[tuple[int, str]], json_: bool) -> None:
    if json_:
        print_json({"findings": [f.__dict__ for f in findings], "fixed": [{"id": j, "status": s} for j, s in fixed]})
        return
    for f in findings:
        mark = "[green]ok[/]     " if f.ok else "[red]problem[/]"
        console.print(f"{mark} {f.check:9s} {f.message}", highlight=False, soft_wrap=True)
    for jid, status in fixed:
        console.print(f"[yellow]fixed[/]   job       job {jid} -> {status}", highlight=False, soft_wrap=True)


def register(app: typer.Typer, name: Optional[str] = None) -> None:
    """Adds ``doctor`` to the root app."""
    app.command(name or "doctor")(doctor_cmd)
