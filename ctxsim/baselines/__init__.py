"""Reference numbers (the paper's, the reference implementation's logs, imported ones) with provenance.

```python
from ctxsim.baselines import ensure_baselines, list_baselines, read_baseline_file, import_baselines
ensure_baselines(reg)                    # loads the shipped paper-results.csv on first use
rows = list_baselines(reg, dataset="cub", resolution=256, method="hybrid")
added, skipped = import_baselines(reg, read_baseline_file("mine.csv"))
```
Values are percentages (0..100). Runs store fractions; convert explicitly.
"""

from __future__ import annotations

from typing import Any, Optional

from ctxsim.baselines.names import (
    LOSS_METHODS,
    display_method,
    loss_for_method,
    method_matches,
    method_names,
    normalize_dataset,
)
from ctxsim.baselines.store import (
    COLUMNS,
    FINAL_KIND_PRIORITY,
    KINDS,
    BaselineRow,
    curve_epoch,
    ensure_baselines,
    import_baselines,
    load_shipped,
    parse_baselines,
    read_baseline_file,
    shipped_current,
)


def list_baselines(
    reg,
    dataset: Optional[str] = None,
    resolution: Optional[int] = None,
    method: Optional[str] = None,
    metric: Optional[str] = None,
    kinds: Optional[tuple[str, ...]] = None,
) -> list[dict[str, Any]]:
    """Stored reference numbers as dicts (loads the shipped ones first if needed).

    ``method`` is a ctxsim loss name ("ms_miner") or a method spelling ("MS+miner"); each dict gets
    ``loss``: the ctxsim loss the method stands for, or None.
    """
    from ctxsim.registry.queries import baselines_table

    ensure_baselines(reg)
    rows = baselines_table(reg, dataset=dataset, resolution=resolution, metric=metric, kinds=kinds)
    if not shipped_current(reg):
        # a read-only handle never loads them: read this version's shipped numbers from the package
        shipped = [
            dict(b.to_dict(), id=None) for b in load_shipped()
            if (not dataset or b.dataset == dataset)
            and (not resolution or b.resolution in (resolution, None))
            and (not metric or b.metric == metric)
            and (kinds is None or b.kind in tuple(kinds))
        ]
        rows = [r for r in rows if r["origin"] != "shipped"] + shipped
    if method:
        rows = [r for r in rows if method_matches(r["method"], method)]
    for r in rows:
        r["loss"] = loss_for_method(r["method"])
    return rows


__all__ = [
    "COLUMNS", "KINDS", "FINAL_KIND_PRIORITY", "LOSS_METHODS", "BaselineRow", "curve_epoch",
    "display_method", "ensure_baselines", "import_baselines", "list_baselines", "load_shipped",
    "loss_for_method", "method_matches", "method_names", "normalize_dataset", "parse_baselines",
    "read_baseline_file",
]
