"""Tidy exports for analysis in pandas, R or a spreadsheet (``ctxsim export``).

- ``runs_records``: one row per run: the job's columns (id, status, dataset, loss, resolution,
  seed, times, host, provenance: git commit, dirty tree, config hash), its tags, every config key
  flattened to ``config.<key>`` (nested keys joined by dots), every logged metric as
  ``<key>.best``/``<key>.best_step``/``<key>.last``/``<key>.last_step`` (R@K and MAP@R as the
  fractions the registry stores, as in ``ls --json``), and whether it is comparable with the paper's
  recipe (``comparable``, ``deviations``).
- ``curves_records``: the long table of every logged value: job_id, key, step, value, time.

``write_records`` writes CSV (stdlib), JSON lines, or Parquet (pyarrow, optional), atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy import select

from ctxsim.errors import ConfigError
from ctxsim.files import atomic_write

FORMATS = ("csv", "parquet", "jsonl")
SUMMARY_FIELDS = ("best", "best_step", "last", "last_step")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON text (one cell each)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def runs_records(reg, status: Optional[Iterable[str]] = None, dataset: Optional[str] = None,
                 loss: Optional[str] = None, ids: Optional[Iterable[int]] = None) -> list[dict[str, Any]]:
    """One flat dict per run (newest first); see the module docstring for the columns."""
    from ctxsim.registry.queries import job_configs, runs_table
    from ctxsim.report.comparability import comparability

    jobs = runs_table(reg, status=status, dataset=dataset, loss=loss, ids=ids, summary_keys=())
    job_ids = [j["id"] for j in jobs]
    configs = job_configs(reg, job_ids) if job_ids else {}
    comp = comparability(reg, job_ids)
    out = []
    for j in jobs:
        row = {k: v for k, v in j.items() if k not in ("summaries", "tags")}
        row["tags"] = ";".join(j.get("tags") or [])
        try:
            cfg = json.loads(configs.get(j["id"]) or "{}")
        except ValueError:
            cfg = {}
        row.update(flatten(cfg if isinstance(cfg, dict) else {}, "config."))
        for key, s in sorted((j.get("summaries") or {}).items()):
            for f in SUMMARY_FIELDS:
                row[f"{key}.{f}"] = s.get(f)
        c = comp.get(j["id"], {})
        row["comparable"] = c.get("comparable")
        row["deviations"] = "; ".join(c.get("deviations") or [])
        out.append(row)
    return out


def curves_records(reg, job_ids: Sequence[int], keys: Optional[Iterable[str]] = None) -> list[dict[str, Any]]:
    """Every logged value of the jobs (job_id, key, step, value, time), ordered by job, key, step."""
    from ctxsim.registry.models import Metric

    t = Metric.__table__
    q = (select(t.c.job_id, t.c.key, t.c.step, t.c.value, t.c.time).where(t.c.job_id.in_(list(job_ids)))
         .order_by(t.c.job_id, t.c.key, t.c.step))
    if keys:
        q = q.where(t.c.key.in_(list(keys)))
    with reg.engine.connect() as c:
        return [{"job_id": r.job_id, "key": r.key, "step": r.step, "value": r.value, "time": r.time} for r in c.execute(q)]


def columns_of(records: list[dict[str, Any]]) -> list[str]:
    """Every key in first-seen order (rows may lack some: a config key or metric only some runs have)."""
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def _cell(v: Any) -> Any:
    return v.isoformat(sep=" ") if isinstance(v, datetime) else v


def write_records(records: list[dict[str, Any]], path: str | os.PathLike, fmt: str) -> Path:
    """Writes ``records`` to ``path`` as csv, jsonl or parquet (atomically); returns the path."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    cols = columns_of(records)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("Parquet needs pyarrow: pip install pyarrow (or use --format csv or jsonl)") from None
        table = pa.Table.from_pylist([{c: _cell(r.get(c)) for c in cols} for r in records])
        buf = io.BytesIO()
        pq.write_table(table, buf)
        with atomic_write(path, "wb") as fh:
            fh.write(buf.getvalue())
        return path
    with atomic_write(path, "w") as fh:
        if fmt == "csv":
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for r in records:
                w.writerow({c: _cell(r.get(c)) for c in cols})
        else:
            for r in records:
                fh.write(json.dumps({c: _cell(v) for c, v in r.items()}, default=str) + "\n")
    return path
