"""Tuning studies (``ctxsim tune``): trials by state, the best validation value and its parameters."""

from __future__ import annotations

from typing import Any, Optional

from rich.text import Text

from ctxsim.names import fmt_with_unit
from ctxsim.tui.widgets.keyed_table import KeyedTable


def trials_cell(study: dict[str, Any]) -> str:
    """``8 done`` or ``5 done · 2 pruned · 1 running`` (the states with trials), else the total."""
    states = study.get("states")
    if not states:
        return str(study.get("trials") or 0)
    words = {"complete": "done", "pruned": "pruned", "running": "running", "fail": "failed", "waiting": "waiting"}
    parts = [f"{states[k]} {w}" for k, w in words.items() if states.get(k)]
    return " · ".join(parts) or "0"


def params_cell(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


class StudiesTable(KeyedTable):
    def __init__(self, **kw) -> None:
        # by importance: at 80 columns the best value and the trials' progress stay in view
        super().__init__((("study", "Study"), ("best", "Best"), ("trials", "Trials"), ("run", "Dataset/loss"),
                          ("job", "Best job"), ("objective", "Objective (val)"), ("params", "Best parameters")),
                         **kw)
        self._best_jobs: dict[str, Optional[int]] = {}

    def show(self, studies: list[dict[str, Any]]) -> None:
        rows = []
        for s in studies:
            best = fmt_with_unit(s.get("objective"), s.get("best_value"))
            rows.append((s["study"], [s["study"], Text(best, style="bold"), trials_cell(s),
                                      f"{s.get('dataset') or '?'}/{s.get('loss') or '?'}",
                                      "" if s.get("best_job") is None else str(s["best_job"]),
                                      s.get("objective") or "", params_cell(s.get("best_params") or {})]))
        self._best_jobs = {s["study"]: s.get("best_job") for s in studies}
        self.sync(rows)

    def current_best_job(self) -> Optional[int]:
        """The job of the best trial of the study under the cursor (None: no study or no complete trial)."""
        k = self.current_key()
        job = self._best_jobs.get(k) if k is not None else None
        return int(job) if job is not None else None
