"""A study in words and numbers: its trials with their jobs, the best value and parameters, and
parameter importances (optuna.importance, fANOVA by default)."""

from __future__ import annotations

import math
from typing import Any, Optional

import optuna
from optuna.trial import TrialState
from sqlalchemy import inspect

from ctxsim.errors import one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import Registry
from ctxsim.tuning.study import load_existing, storage


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def study_summary(reg: Registry, name: str) -> dict[str, Any]:
    """{study, direction, settings, trials: [...], best: {...} | None, importances: {...}, note}."""
    study = load_existing(reg, name)
    trials = study.get_trials(deepcopy=False)
    job_ids = [int(t.user_attrs["job_id"]) for t in trials if "job_id" in t.user_attrs]
    states = jobs.job_states(reg, job_ids)
    rows = []
    for t in trials:
        jid = t.user_attrs.get("job_id")
        st = states.get(int(jid)) if jid is not None else None
        last_step = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "value": _num(t.value), "params": dict(t.params),
            "job_id": jid, "job_status": st[0] if st else None,
            "last_report": [last_step, _num(t.intermediate_values[last_step])] if last_step is not None else None,
            "seconds": t.duration.total_seconds() if t.duration is not None else None,
        })
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": dict(b.params), "job_id": b.user_attrs.get("job_id")}
    importances: dict[str, float] = {}
    note = None
    if len(complete) >= 2:
        try:
            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as e:  # e.g. every trial sampled the same value
            note = f"importances unavailable: {one_line(e)}"
    else:
        note = "importances need at least 2 complete trials"
    attrs = study.user_attrs
    return {
        "study": study.study_name, "direction": study.direction.name.lower(),
        "settings": {k: attrs.get(k) for k in ("dataset", "loss", "objective", "space")},
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")},
        "trials": rows, "best": best, "importances": importances, "note": note,
    }


STUDY_TABLE = "studies"  # Optuna's table of studies (its schema, created by the first ``ctxsim tune``)


def has_studies(reg: Registry) -> bool:
    """Whether Optuna's tables exist in the registry database (read only: never creates them)."""
    return inspect(reg.engine).has_table(STUDY_TABLE)


def list_studies(reg: Registry, st: Optional[optuna.storages.BaseStorage] = None,
                 counts: bool = False) -> list[dict[str, Any]]:
    """Every study in the registry database with its trial count and best value so far (sorted by
    name; [] without touching the database's schema when no study was ever made). ``st``: an open
    storage to reuse (a poller's); ``counts``: also ``states``, the trials per state (complete,
    pruned, running, fail, waiting)."""
    if not has_studies(reg):
        return []
    st = st if st is not None else storage(reg)
    out = []
    for s in optuna.get_all_study_summaries(st, include_best_trial=True):
        bt = s.best_trial
        row = {"study": s.study_name, "trials": s.n_trials, "best_value": _num(bt.value) if bt else None,
               "best_params": dict(bt.params) if bt else {}, "best_job": bt.user_attrs.get("job_id") if bt else None,
               "best_trial": bt.number if bt else None, "objective": s.user_attrs.get("objective"),
               "dataset": s.user_attrs.get("dataset"), "loss": s.user_attrs.get("loss"),
               "direction": s.direction.name.lower() if s.direction is not None else None}
        if counts:
            trials = optuna.load_study(study_name=s.study_name, storage=st).get_trials(deepcopy=False)
            row["states"] = {k.name.lower(): sum(t.state == k for t in trials) for k in TrialState}
        out.append(row)
    return sorted(out, key=lambda d: d["study"])


class StudyReader:
    """``list_studies`` for a poller (the dashboard): Optuna's storage is opened once, and only after
    a study exists, so polling a registry without studies never adds Optuna's schema."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self._storage: Optional[optuna.storages.RDBStorage] = None

    def studies(self) -> list[dict[str, Any]]:
        """The studies with their trials per state (see ``list_studies``)."""
        if self._storage is None:
            if not has_studies(self.reg):
                return []
            self._storage = storage(self.reg)
        return list_studies(self.reg, self._storage, counts=True)

    def close(self) -> None:
        st, self._storage = self._storage, None
        if st is not None:
            st.engine.dispose()
