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

from ctxsim import DATASETS
from ctxsim.baselines.names import normalize_dataset
from ctxsim.errors import DataError

COLUMNS = ("resolution", "dataset", "method", "metric", "value", "kind", "source")

# Provenance kinds (seed-spec §6): the shipped file uses the first five; imports may also use the
# last two ("paper_table": transcribed from the paper PDF, seed-spec §6.3; "user": anything else).
KINDS = (
    "reference_log",        # final eval printed in the reference implementation's sample logs (§6.1)
    "reference_log_best",   # best test R@1 during training in those logs: test-set selection (§6.1)
    "reference_log_curve",  # test R@1 every 5 epochs in those logs; metric "R@1@epoch{E}" (§6.1)
    "figure_read_approx",   # read off a README figure by eye, about ±0.3 (§6.2)
    "published_other",      # another paper's published number, for context
    "paper_table",          # a cell of the paper's Tables 2-5 (§6.3)
    "user",                 # anything a user imports
)

# Which kind to prefer as "the paper's number" for a run's final metric (lower index wins).
FINAL_KIND_PRIORITY = ("paper_table", "reference_log", "figure_read_approx", "user")

META_KEY = "baselines_shipped_sha"
SHIPPED_FILE = "paper-results.csv"
MAX_TEXT = 64  # width of the method/metric columns of the Baseline table

_CURVE_METRIC = re.compile(r"^R@\d+@epoch(\d+)$")
_METRIC = re.compile(r"^\S+$")


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
        if not 1 <= resolution <= 4096:
            return None, f"resolution {resolution} is out of range"
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
    val_txt = (rec.get("value") or "").strip()
    try:
        value = float(val_txt)
    except ValueError:
        return None, f"value {val_txt!r} is not a number"
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        return None, f"value {val_txt} is outside 0..100 (values are percentages)"
    kind = (rec.get("kind") or "").strip()
    if kind not in KINDS:
        return None, f"kind {kind!r} is not one of {', '.join(KINDS)}"
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
    rows: list[BaselineRow] = []
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
        else:
            rows.append(BaselineRow(**{**row.to_dict(), "origin": origin}))
    if errors:
        more = f" (and {len(errors) - 3} more bad rows)" if len(errors) > 3 else ""
        raise DataError(f"{name}: " + "; ".join(errors[:3]) + more + "; nothing imported")
    if not rows:
        raise DataError(f"{name}: no rows after the header; nothing imported")
    return rows


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
        raise DataError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    return parse_baselines(text, str(p), origin="imported")


def _model(row: BaselineRow):
    from ctxsim.registry.models import Baseline

    return Baseline(**row.to_dict())


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
    if current == sha:
        return 0
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


def import_baselines(reg, rows: Iterable[BaselineRow]) -> tuple[int, int]:
    """Adds validated rows (origin "imported") in one transaction; identical rows already stored are
    skipped. Returns (added, skipped)."""
    from sqlalchemy import select

    from ctxsim.registry.models import Baseline

    ensure_baselines(reg)
    rows = list(rows)
    with reg.begin() as s:
        have = {
            (b.resolution, b.dataset, b.method, b.metric, b.kind, b.value, b.source)
            for b in s.scalars(select(Baseline))
        }
        added = 0
        for r in rows:
            if r.key in have:
                continue
            have.add(r.key)
            s.add(_model(BaselineRow(**{**r.to_dict(), "origin": "imported"})))
            added += 1
    return added, len(rows) - added
