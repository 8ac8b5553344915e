"""Text renderings of comparison rows: the terminal table's cells, markdown, CSV and JSON (the
CLI prints them; the report writes them). Values arrive in percent (``ctxsim.report.compare``)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Optional

from ctxsim.report.comparability import NOT_COMPARABLE
from ctxsim.report.compare import CSV_FIELDS, CompareRow

MISSING = "—"
NUMERIC_COLUMNS = {"Res.", "Runs", "n", "Final", "95% CI", "Best", "Paper", "Δ (pp)", "Δ", "Paper best", "Δ best",
                   "Δ untrained"}
TEST_SELECTED_MARK = "†"


def fmt_value(v: Optional[float], digits: int = 2) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def fmt_paper(v: Optional[float]) -> str:
    """A reference number as stored (up to 3 decimals, no trailing zeros beyond one)."""
    if v is None:
        return MISSING
    s = f"{v:.3f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def fmt_delta(v: Optional[float]) -> str:
    return MISSING if v is None else f"{v:+.2f}"


def fmt_mean_std(mean: Optional[float], std: Optional[float], mark: str = "") -> str:
    if mean is None:
        return MISSING
    s = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return f"{s} {mark}" if mark else s


def fmt_ci(low: Optional[float], high: Optional[float]) -> str:
    return MISSING if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def display_table(rows: list[CompareRow], compact: bool = False) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells, footnotes) shared by the terminal table (``compact``) and markdown.

    Sources become numbered footnotes so that cells stay short; so do the deviations of rows that
    are not comparable with the reference (their Δ reads ``n/c (a)``).
    """
    with_variant = any(r["variant"] for r in rows)
    with_best_ref = any(r["paper_best"] is not None for r in rows)
    sources: list[str] = []
    deviation_notes: list[str] = []

    def delta(r: CompareRow, v: Optional[float]) -> str:
        if v is None or r.get("comparable", True):
            return fmt_delta(v)
        text = ", ".join(r.get("deviations") or ["unknown"])
        if text not in deviation_notes:
            deviation_notes.append(text)
        return f"{NOT_COMPARABLE} ({_letter(deviation_notes.index(text))})"

    def ref(src: Optional[str]) -> str:
        if not src:
            return MISSING
        if src not in sources:
            sources.append(src)
        return f"[{sources.index(src) + 1}]"

    if compact:
        header = ["Run group"] + (["Variant"] if with_variant else []) + [
            "Metric", "n", "Final", "95% CI", "Best", "Paper", "Δ", "Δ untrained", "Provenance"]
        header += ["Paper best", "Δ best"] if with_best_ref else []
    else:
        header = ["Dataset", "Loss", "Res."] + (["Variant"] if with_variant else []) + [
            "Metric", "Runs", "Final", "95% CI", "Best", "Paper", "Δ (pp)", "Δ untrained", "Kind", "Src"]
        header += ["Paper best", "Δ best", "Src best"] if with_best_ref else []
    cells = []
    for r in rows:
        mark = TEST_SELECTED_MARK if r["test_selected"] else ""
        res = str(r["resolution"] or MISSING)
        if compact:
            line = [f"{r['dataset']} {r['loss']} {res}"]
        else:
            line = [r["dataset"], r["loss"], res]
        if with_variant:
            line.append(r["variant"] or MISSING)
        line += [
            r["metric"], str(r["n"]), fmt_mean_std(r["final_mean"], r["final_std"], mark),
            fmt_ci(r.get("final_ci_low"), r.get("final_ci_high")),
            fmt_mean_std(r["best_mean"], r["best_std"]), fmt_paper(r["paper"]), delta(r, r["delta"]),
            fmt_delta(r.get("delta_untrained")),
        ]
        if compact:
            line.append(f"{r['paper_kind']} {ref(r['paper_source'])}" if r["paper_kind"] else MISSING)
            if with_best_ref:
                best = fmt_paper(r["paper_best"])
                line += [best if r["paper_best"] is None else f"{best} {ref(r['paper_best_source'])}",
                         delta(r, r["delta_best"])]
        else:
            line += [r["paper_kind"] or MISSING, ref(r["paper_source"])]
            if with_best_ref:
                line += [fmt_paper(r["paper_best"]), delta(r, r["delta_best"]), ref(r["paper_best_source"])]
        cells.append(line)
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    notes.append(
        "Values in percent; ± = sample std over seeds; 95% CI = Student-t interval of the mean over "
        "seeds (two or more); Final = what the run reported (else its last "
        "evaluation); Best = maximum over evaluations during training; Δ = Final - Paper in "
        f"percentage points; {MISSING} = no reference number. Δ untrained = Final - the same trunk "
        "before training on the same test split (ctxsim eval --untrained)."
    )
    if deviation_notes:
        notes.append(f"{NOT_COMPARABLE} = not comparable with the reference number (Δ not shown): the runs are "
                     "not the recipe of their cell on the reference split under the reference profile.")
        notes += [f"({_letter(i)}) {text}" for i, text in enumerate(deviation_notes)]
    if with_best_ref:
        notes.append("Paper best = the reference log's best test R@1 during training; Δ best = Best - Paper best.")
    if any(r["test_selected"] for r in rows):
        notes.append(f"{TEST_SELECTED_MARK} the reported model was selected on the test set (docs/reference-implementation.md §9.6).")
    return header, cells, notes


def _letter(i: int) -> str:
    """Footnote letters a..z, then aa, ab, ..."""
    return chr(97 + i) if i < 26 else _letter(i // 26 - 1) + chr(97 + i % 26)


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: list[CompareRow]) -> str:
    """A GitHub-flavoured markdown table plus numbered source notes; pastes into a README as is."""
    header, cells, notes = display_table(rows)
    numeric = NUMERIC_COLUMNS
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if h in numeric else "---" for h in header) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in line) + " |" for line in cells]
    out.append("")
    out += [_md_cell(n) + "  " for n in notes]  # two trailing spaces: markdown line breaks
    return "\n".join(out).rstrip() + "\n"


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join("" if x is None else str(x) for x in v)
    if isinstance(v, float):
        return repr(round(v, 6)) if math.isfinite(v) else ""
    return v


def to_csv(rows: list[CompareRow]) -> str:
    """One CSV line per row, full sources, percent values, empty cells for missing numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow(["; ".join(r.get(f) or []) if f == "deviations" else _csv_value(r.get(f)) for f in CSV_FIELDS])
    return buf.getvalue()


def to_json(rows: list[CompareRow]) -> str:
    rows = [r.to_dict() if isinstance(r, CompareRow) else r for r in rows]
    return json.dumps(rows, indent=2, default=str, ensure_ascii=False) + "\n"
