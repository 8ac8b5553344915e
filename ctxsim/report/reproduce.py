"""Planning ``ctxsim reproduce``: which runs of a paper table are still missing, and queueing them.

A table is a resolution family's datasets × methods (``TABLES``). A cell (dataset, loss) counts the
runs that are its recipe under the reference profile (``ctxsim.report.compare.run_deviations``
without any deviation; a queued job has no data fingerprint yet, so for queued and running jobs only
a recorded fingerprint is checked): finished ones and pending ones (queued, running). Reproducing
queues, per cell, as many new seeds as it lacks to reach ``seeds`` runs, and nothing else: a second
call queues nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from ctxsim.errors import ConfigError
from ctxsim.names import PAPER_DATASETS_BY_RESOLUTION, PAPER_TABLE_LOSSES, canonical_dataset, canonical_loss
from ctxsim.registry.states import JobStatus
from ctxsim.report.compare import NO_FINGERPRINT, gather_runs

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
COUNTED = (JobStatus.DONE,) + ACTIVE


@dataclass(frozen=True)
class PaperTable:
    """The layout of one of the paper's result tables: its datasets (columns) and methods (rows),
    as ctxsim losses, in the order the table lists them."""

    resolution: int
    title: str
    datasets: tuple[str, ...]
    losses: tuple[str, ...]


# The paper's result tables are not transcribed (docs/reference-implementation.md §6.3), so their
# method lists are those of the code that produced them: the 224 family's tuned baselines
# (reference-implementation §2.3, "for Tables 2 and 3") and the 256 family's main.py --loss
# choices (§2.2; appendix Table 4, with iNat and In-Shop).
TABLES: dict[int, PaperTable] = {
    224: PaperTable(224, "Tables 2/3 (224×224, 224x224/train.py)", PAPER_DATASETS_BY_RESOLUTION[224],
                    PAPER_TABLE_LOSSES[224]),
    256: PaperTable(256, "appendix Table 4 (256×256, main.py)", PAPER_DATASETS_BY_RESOLUTION[256],
                    PAPER_TABLE_LOSSES[256]),
}


def paper_table(resolution: int) -> PaperTable:
    try:
        return TABLES[int(resolution)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"--table must be 224 or 256, got {resolution!r}") from None


def table_cells(resolution: int, datasets: Optional[Iterable[str]] = None,
                losses: Optional[Iterable[str]] = None) -> tuple[PaperTable, list[tuple[str, str]]]:
    """The table and its (dataset, loss) cells, optionally narrowed to some datasets and losses
    (any spelling; ConfigError for one the table does not have)."""
    t = paper_table(resolution)
    ds = _narrow([canonical_dataset(d) for d in datasets] if datasets else None, t.datasets, "dataset", t)
    ls = _narrow([canonical_loss(x) for x in losses] if losses else None, t.losses, "method", t)
    return t, [(d, x) for d in ds for x in ls]


def _narrow(chosen: Optional[list[str]], allowed: tuple[str, ...], what: str, t: PaperTable) -> list[str]:
    if not chosen:
        return list(allowed)
    bad = [c for c in chosen if c not in allowed]
    if bad:
        raise ConfigError(f"table {t.resolution} has no {what} {bad[0]} (it has: {', '.join(allowed)})")
    return [a for a in allowed if a in chosen]


def counts_for_cell(job: dict[str, Any]) -> bool:
    """True when a gathered job counts as a run of its cell: a finished run that is comparable, or a
    pending one whose config is the recipe (and whose data, once recorded, is the reference split)."""
    devs = job["deviations"]
    if job["status"] == JobStatus.DONE:
        return not devs
    return job["status"] in ACTIVE and all(d == NO_FINGERPRINT for d in devs)


def cell_runs(reg, resolution: int, cells: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(dataset, loss) -> the gathered jobs (``compare.gather_runs``) that count for that cell."""
    wanted = set(cells)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in cells}
    for j in gather_runs(reg, resolution=resolution, statuses=COUNTED):
        key = (j["dataset"], j["loss"])
        if key in wanted and counts_for_cell(j):
            out[key].append(j)
    return out


@dataclass
class CellPlan:
    dataset: str
    loss: str
    resolution: int
    done: list[int] = field(default_factory=list)  # job ids
    pending: list[int] = field(default_factory=list)
    new_seeds: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)  # job ids created by reproduce()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan(reg, resolution: int, datasets: Optional[Iterable[str]] = None, losses: Optional[Iterable[str]] = None,
         seeds: int = 3) -> list[CellPlan]:
    """Per cell of the table: its counted finished and pending runs and the seeds to add (the
    smallest seeds none of its runs uses) to reach ``seeds`` runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    t, cells = table_cells(resolution, datasets, losses)
    runs = cell_runs(reg, t.resolution, cells)
    out = []
    for ds, loss in cells:
        members = runs[(ds, loss)]
        p = CellPlan(ds, loss, t.resolution,
                     done=[j["id"] for j in members if j["status"] == JobStatus.DONE],
                     pending=[j["id"] for j in members if j["status"] in ACTIVE])
        used = {j["seed"] for j in members}
        s = 0
        while len(members) + len(p.new_seeds) < seeds:
            if s not in used:
                p.new_seeds.append(s)
            s += 1
        out.append(p)
    return out


@dataclass
class UntrainedPlan:
    """The untrained-backbone baseline of one dataset of the table (``ctxsim.baselines.untrained``):
    the job that computes it, if one is queued, running or done (``existing``), or the one queued now."""

    dataset: str
    resolution: int
    existing: Optional[int] = None  # job id
    queued: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def untrained_plans(reg, plans: Sequence[CellPlan], root: Optional[str] = None) -> list[tuple[UntrainedPlan, dict]]:
    """One untrained baseline per dataset of the planned cells (its trunk and head are the same for
    every method of a table): [(plan, the untrained job's config)]."""
    from sqlalchemy import select

    from ctxsim.baselines.untrained import untrained_job_config
    from ctxsim.registry.jobs import config_fields
    from ctxsim.registry.models import Job
    from ctxsim.train.configure import configure

    firsts: dict[str, CellPlan] = {}
    for p in plans:  # the job row names the contextual loss's recipe where the table has it
        if p.dataset not in firsts or (p.loss == "hybrid" and firsts[p.dataset].loss != "hybrid"):
            firsts[p.dataset] = p
    out = []
    for ds, p in firsts.items():
        job_cfg = untrained_job_config(configure(ds, p.loss, p.resolution, root=root, profile="reference"))
        h = config_fields(job_cfg)["config_hash"]
        with reg.Session() as s:
            jid = s.scalar(select(Job.id).where(Job.config_hash == h, Job.status.in_(COUNTED)).order_by(Job.id).limit(1))
        out.append((UntrainedPlan(ds, p.resolution, existing=jid), job_cfg))
    return out


def reproduce(reg, resolution: int, datasets: Optional[Iterable[str]] = None,
              losses: Optional[Iterable[str]] = None, seeds: int = 3, root: Optional[str] = None,
              dry_run: bool = False, n_gpus: int = 0, priority: int = 0, executor: str = "local",
              tags: Sequence[str] = ("reproduce",)) -> tuple[list[CellPlan], list[UntrainedPlan]]:
    """``plan`` and, unless ``dry_run``, queue the missing runs in one transaction: each the recipe
    of its cell under the reference profile with one of the new seeds (``root``: the data root),
    and the untrained baseline of each dataset that has no such job yet (``Δ untrained``)."""
    from ctxsim.train.configure import configure

    plans = plan(reg, resolution, datasets, losses, seeds)
    untrained = untrained_plans(reg, plans, root)
    todo = [(p, s) for p in plans for s in p.new_seeds]
    cfgs = [configure(p.dataset, p.loss, p.resolution, root=root, seed=s, profile="reference") for p, s in todo]
    new_u = [(u, c) for u, c in untrained if u.existing is None]
    if dry_run or not (cfgs or new_u):
        return plans, [u for u, _ in untrained]
    from ctxsim.registry.jobs import enqueue_many

    ids = enqueue_many(reg, cfgs + [c for _, c in new_u], tags=list(tags), priority=priority, n_gpus=n_gpus,
                       executor=executor)
    for (p, _), (jid, _created) in zip(todo, ids):
        p.queued.append(jid)
    for (u, _), (jid, _created) in zip(new_u, ids[len(todo):]):
        u.queued = jid
    return plans, [u for u, _ in untrained]
