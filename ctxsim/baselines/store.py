"""Reference numbers: the shipped CSV (package data), validation, and loading into the registry.

Every number keeps its provenance (``kind``, ``source``). Values are percentages (0..100), as in
the paper; runs store fractions (0..1) and callers convert explicitly (``ctxsim.report.compare``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from ctxsim.baselines.names import normalize_dataset
from ctxsim.errors import DataError, MissingFileError
from ctxsim.names import DATASETS, RESOLUTIONS

COLUMNS = ("resolution", "dataset", "method", "metric", "value", "kind", "source")

# Provenance kinds (docs/reference-implementation.md §6): the shipped file uses the first five;
# imports may also use "paper_table" (transcribed from the paper PDF, §6.3 there) and "user"
# (anything else); "untrained" rows are computed by ctxsim, never imported.
KINDS = (
    "reference_log",        # final eval printed in the reference implementation's sample logs (§6.1)
    "reference_log_best",   # best test R@1 during training in those logs: test-set selection (§6.1)
    "reference_log_curve",  # test R@1 every 5 epochs in those logs; metric "R@1@epoch{E}" (§6.1)
    "figure_read_approx",   # read off a README figure by eye, about ±0.3 (§6.2)
    "published_other",      # another paper's published number, for context
    "paper_table",          # a cell of the paper's Tables 2-5 (§6.3)
    "user",                 # anything a user imports
    "untrained",            # computed here: the run's trunk before training (ctxsim.baselines.untrained)
)
IMPORT_KINDS = KINDS[:-1]  # "untrained" rows are computed, never imported

# Which kind to prefer as "the paper's number" for a run's final metric (lower index wins).
FINAL_KIND_PRIORITY = ("paper_table", "reference_log", "figure_read_approx", "user")

META_KEY = "baselines_shipped_sha"
SHIPPED_FILE = "paper-results.csv"
MAX_TEXT = 64  # width of the method/metric columns of the Baseline table

_CURVE_METRIC = re.compile(r"^R@\d+@epoch(\d+)$")
_METRIC = re.compile(r"^\S+$")
# The metric names a reference number may have: Recall@K for K in the benchmarks' standard lists
# (docs/reference-implementation.md §5: CUB/Cars 1-8, the 224 code's 16 and 32, SOP 1-1000,
# iNat 1-32, In-Shop 1-50), optionally on the training set (train_R@K) or at an epoch of a learning
# curve (R@K@epochE); MAP@R, R-precision and mAP. All are percentages.
PAPER_KS = (1, 2, 4, 8, 10, 16, 20, 30, 32, 40, 50, 100, 1000)
OTHER_METRICS = ("MAP@R", "RP", "mAP")
_KNOWN_METRIC = re.compile(r"^(train_)?R@(\d+)(@epoch\d+)?$")


def known_metric(metric: str) -> bool:
    """True for a metric name reference numbers may use (R@K with K in PAPER_KS, MAP@R, RP, mAP...)."""
    m = _KNOWN_METRIC.match(metric)
    if m:
        return int(m.group(2)) in PAPER_KS
    return metric in OTHER_METRICS


class BaselineRows(list):
    """Parsed rows with the CSV line each came from (``lines``), so that later checks name the line."""

    lines: list[int]


@dataclass(frozen=True)
class BaselineRow:
    """One reference number with its provenance; ``value`` in percent (0..100)."""

    resolution: Optional[int]
    dataset: str
    method: str
    metric: str
    value: float
    kind: str
    source: str
    origin: str = "shipped"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> tuple:
        return (self.resolution, self.dataset, self.method, self.metric, self.kind, self.value, self.source)


def curve_epoch(metric: str) -> Optional[int]:
    """The epoch of a learning-curve metric ("R@1@epoch15" -> 15), else None."""
    m = _CURVE_METRIC.match(metric)
    return int(m.group(1)) if m else None


def _check_row(rec: dict[str, str]) -> tuple[Optional[BaselineRow], Optional[str]]:
    """(row, None) or (None, reason) for one CSV record."""
    res_txt = (rec.get("resolution") or "").strip()
    resolution: Optional[int] = None
    if res_txt:
        try:
            resolution = int(res_txt)
        except ValueError:
            return None, f"resolution {res_txt!r} is not an integer (or leave it empty)"
        if resolution not in RESOLUTIONS:
            return None, (f"resolution {resolution} is not one of the paper's "
                          f"({', '.join(map(str, RESOLUTIONS))}; or leave it empty)")
    ds_txt = (rec.get("dataset") or "").strip()
    dataset = normalize_dataset(ds_txt) if ds_txt else None
    if dataset is None:
        return None, f"unknown dataset {ds_txt!r} (known: {', '.join(DATASETS)})"
    method = (rec.get("method") or "").strip()
    if not method or len(method) > MAX_TEXT:
        return None, f"method must be 1..{MAX_TEXT} characters"
    metric = (rec.get("metric") or "").strip()
    if not metric or len(metric) > MAX_TEXT or not _METRIC.match(metric):
        return None, f"metric {metric!r} must be 1..{MAX_TEXT} characters without spaces (e.g. R@1, MAP@R)"
    if not known_metric(metric):
        return None, (f"unknown metric {metric!r}: use R@K with K in {', '.join(map(str, PAPER_KS))} "
                      f"(or train_R@K, R@K@epochE), or one of {', '.join(OTHER_METRICS)}")
    val_txt = (rec.get("value") or "").strip()
    try:
        value = float(val_txt)
    except ValueError:
        return None, f"value {val_txt!r} is not a number"
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        return None, f"value {val_txt} is outside 0..100 (values are percentages)"
    if 0.0 < value <= 1.0:
        return None, (f"value {val_txt} looks like a fraction; values are percentages "
                      f"(write {100 * value:g}, not {val_txt})")
    kind = (rec.get("kind") or "").strip()
    if kind not in IMPORT_KINDS:
        return None, f"kind {kind!r} is not one of {', '.join(IMPORT_KINDS)}"
    if kind == "reference_log_curve" and curve_epoch(metric) is None:
        return None, f"a reference_log_curve row needs a metric like R@1@epoch5, not {metric!r}"
    source = (rec.get("source") or "").strip()
    if not source:
        return None, "source is empty (every number needs its provenance)"
    return BaselineRow(resolution, dataset, method, metric, value, kind, source), None


def parse_baselines(text: str, name: str = "<csv>", origin: str = "imported") -> list[BaselineRow]:
    """Validates every row of a baseline CSV; raises DataError naming the bad lines, else returns all rows."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: empty file (expected the header {','.join(COLUMNS)})") from None
    except csv.Error as e:
        raise DataError(f"{name}: line 1: {e}") from None
    header = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    extra = [h for h in header if h not in COLUMNS]
    if missing or extra or len(set(header)) != len(header):
        what = []
        if missing:
            what.append("missing " + ", ".join(missing))
        if extra:
            what.append("unknown " + ", ".join(repr(h) for h in extra))
        if len(set(header)) != len(header):
            what.append("repeated column")
        raise DataError(f"{name}: line 1: bad header ({'; '.join(what)}); expected {','.join(COLUMNS)}")
    rows = BaselineRows()
    rows.lines = []
    cells: dict[tuple, tuple[int, float]] = {}
    errors: list[str] = []
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            errors.append(f"line {line}: {e}")
            break
        start, line = line, reader.line_num + 1
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            errors.append(f"line {start}: {len(values)} fields, expected {len(header)}")
            continue
        row, why = _check_row(dict(zip(header, values)))
        if why:
            errors.append(f"line {start}: {why}")
            continue
        first = cells.setdefault(cell_key(row), (start, row.value))
        if first[0] != start:
            if first[1] != row.value:
                errors.append(f"line {start}: a second number for {describe_cell(row)} "
                              f"({row.value:g}; line {first[0]} has {first[1]:g})")
            continue  # the same number twice: kept once
        rows.append(BaselineRow(**{**row.to_dict(), "origin": origin}))
        rows.lines.append(start)
    if errors:
        more = f" (and {len(errors) - 3} more bad rows)" if len(errors) > 3 else ""
        raise DataError(f"{name}: " + "; ".join(errors[:3]) + more + "; nothing imported")
    if not rows:
        raise DataError(f"{name}: no rows after the header; nothing imported")
    return rows


def cell_key(row: BaselineRow) -> tuple:
    """The cell a reference number fills: one number per (resolution, dataset, method, metric) and
    provenance kind (a paper table and a log may disagree; each keeps its own number)."""
    return (row.resolution, row.dataset, row.method, row.metric, row.kind)


def describe_cell(row: BaselineRow) -> str:
    return f"{row.dataset}/{row.resolution or '-'}/{row.method}/{row.metric} ({row.kind})"


def shipped_text() -> str:
    return resources.files("ctxsim.baselines").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")


def load_shipped() -> list[BaselineRow]:
    """The reference numbers shipped with ctxsim (package data ``paper-results.csv``)."""
    return parse_baselines(shipped_text(), SHIPPED_FILE, origin="shipped")


def read_baseline_file(path: str | os.PathLike) -> list[BaselineRow]:
    """Parses and validates a user's CSV file (columns as in the shipped file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    return parse_baselines(text, str(p), origin="imported")


def _model(row: BaselineRow):
    from ctxsim.registry.models import Baseline

    return Baseline(**row.to_dict())


def shipped_current(reg) -> bool:
    """Whether the registry holds the shipped numbers of this version (a read-only handle may not)."""
    from sqlalchemy import select

    from ctxsim.registry.models import Meta

    sha = hashlib.sha256(shipped_text().encode("utf-8")).hexdigest()[:16]
    with reg.Session() as s:
        return s.scalar(select(Meta.value).where(Meta.key == META_KEY)) == sha


def ensure_baselines(reg) -> int:
    """Loads the shipped numbers into the registry on first use (or when the shipped file changed).

    Returns how many shipped rows were (re)loaded; 0 when the registry is already current. Safe when
    several processes race: the meta row is written first, in the same transaction, so a loser's
    transaction fails on its primary key and the winner's rows stand.
    """
    from sqlalchemy import delete, select
    from sqlalchemy.exc import IntegrityError

    from ctxsim.registry.models import Baseline, Meta

    text = shipped_text()
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    with reg.Session() as s:
        current = s.scalar(select(Meta.value).where(Meta.key == META_KEY))
    if current == sha or getattr(reg, "readonly", False):
        return 0  # current, or a read-only handle (ls/compare): the next writer loads them
    rows = parse_baselines(text, SHIPPED_FILE, origin="shipped")
    try:
        with reg.begin() as s:
            meta = s.get(Meta, META_KEY)
            if meta is not None and meta.value == sha:
                return 0
            if meta is None:
                s.add(Meta(key=META_KEY, value=sha))
                s.flush()
            else:
                meta.value = sha
            s.execute(delete(Baseline).where(Baseline.origin == "shipped"))
            s.add_all(_model(r) for r in rows)
    except IntegrityError:
        return 0  # another process loaded them at the same moment
    return len(rows)


def import_baselines(reg, rows: Iterable[BaselineRow], replace: bool = False) -> tuple[int, int]:
    """Adds validated rows (origin "imported") in one transaction; rows already stored with the same
    number are skipped. A different number for a stored cell (cell_key) is refused with DataError
    naming the line, unless ``replace``: then the stored imported number gives way (a shipped number
    never does: import it under another kind). Nothing is written when any row is refused.
    Returns (added, skipped)."""
    from sqlalchemy import select

    from ctxsim.registry.models import Baseline

    ensure_baselines(reg)
    lines = list(getattr(rows, "lines", []) or [])
    rows = list(rows)
    lines += [None] * (len(rows) - len(lines))
    with reg.begin() as s:
        stored: dict[tuple, list] = {}
        for b in s.scalars(select(Baseline)):
            stored.setdefault((b.resolution, b.dataset, b.method, b.metric, b.kind), []).append(b)
        added, errors = 0, []
        for r, line in zip(rows, lines):
            where = f"line {line}: " if line else ""
            old = stored.get(cell_key(r), [])
            if any(b.value == r.value for b in old):
                continue
            if old and (not replace or any(b.origin == "shipped" for b in old)):
                have = ", ".join(f"{b.value:g} ({b.origin})" for b in old)
                hint = ("a shipped number is never replaced: import yours under another kind, e.g. user"
                        if replace else "pass --replace to replace it")
                errors.append(f"{where}{describe_cell(r)} already has {have}; {hint}")
                continue
            for b in old:
                s.delete(b)
            stored[cell_key(r)] = []
            s.add(_model(BaselineRow(**{**r.to_dict(), "origin": "imported"})))
            added += 1
        if errors:  # leaving the transaction by an error rolls it back: nothing imported
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise DataError("; ".join(errors[:3]) + more + "; nothing imported")
    return added, len(rows) - added
