"""Hyperparameter studies on Optuna, stored in the registry's own database (issue 16).

The study lives in Optuna's RDB storage at the registry URL (SQLite file or PostgreSQL), so
``optuna.load_study(study_name=NAME, storage=URL)`` and optuna-dashboard read it as they read any
study. Each trial is one registry job, named ``NAME#<trial>`` and tagged ``study:NAME`` and
``trial:<n>`` (so ``ctxsim ls``, ``compare`` and the dashboard show it); the trial's user attribute
``job_id`` links back. Trials are selected on the validation split only: a config without
``val_classes`` is refused.

Two ways to run the trials, both ask-and-tell:

- workers (default): ``parallel`` trials are kept queued or running for ``ctxsim worker``s; the
  tuner polls each job's validation series in the registry, reports it (``trial.report``), and
  cancels the job of a trial the pruner stops (the trial ends PRUNED once its job is cancelled);
- ``local``: one trial at a time in this process through the runner's foreground job path, the
  validation evaluations reported as they happen and a pruned trial stopped at its next step.

Rerunning the same study continues it: finished trials count towards ``trials``, and trials left
running (Ctrl-C, a crash) are followed again, their cancelled or lost jobs retried from their
checkpoints.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import optuna
from optuna.trial import TrialState

from ctxsim.errors import ConfigError, JobStateError, NotFoundError, RunFailedError, one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import Registry
from ctxsim.registry.queries import metric_series
from ctxsim.registry.states import JobStatus
from ctxsim.train.config import RunConfig
from ctxsim.train.events import Event
from ctxsim.tuning.space import Param, check_keys, distributions, parse_space

log = logging.getLogger(__name__)

OBJECTIVES = ("MAP@R", "RP", "R@1", "R@2", "R@4", "R@8", "R@10", "R@100")
VAL_SPLIT = "val"  # eval events of the validation split carry split="val" ...
VAL_KEY_PREFIX = "val/"  # ... and their metrics are stored as "val/<metric>" in the registry
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_ATTRS = ("dataset", "loss", "objective", "space", "base_config_hash")


def study_tag(name: str) -> str:
    return f"study:{name}"


def val_key(objective: str) -> str:
    """Registry metric key of the validation series a study optimises."""
    return f"{VAL_KEY_PREFIX}{objective}"


def check_study_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(f"study name {name!r}: use 1-48 letters, digits, '.', '_' or '-' (starting with a letter "
                          "or digit)")
    return name


def require_validation(cfg: RunConfig) -> None:
    """Trials are selected on validation classes only; a config without them is refused."""
    if not getattr(cfg, "val_classes", None):
        raise ConfigError(f"tuning needs a validation split: {cfg.dataset} config has no val_classes "
                          "(add --set val_classes=N or a fraction such as 0.4); trials are never selected on test")


@dataclass
class TuneSpec:
    """What a study searches: the base config (recipe + --set), the space, the budget."""

    study: str
    base: RunConfig
    params: list[Param]
    trials: int
    objective: str = "MAP@R"
    parallel: int = 1
    local: bool = False
    gpus_per_job: int = 0
    priority: int = 0

    def validate(self) -> "TuneSpec":
        check_study_name(self.study)
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {self.parallel}")
        if self.local and self.parallel > 1:
            raise ConfigError("--local runs one trial at a time in this process; --parallel needs workers")
        require_validation(self.base)
        check_keys(self.params, self.base)
        return self

    def attrs(self) -> dict[str, Any]:
        """What identifies the study: a rerun with other values is refused."""
        return {"dataset": self.base.dataset, "loss": self.base.loss, "objective": self.objective,
                "space": [p.spec for p in self.params], "base_config_hash": self.base.config_hash()}


def build_spec(study: str, base: RunConfig, space: Sequence[str], trials: int, **kw: Any) -> TuneSpec:
    """A validated TuneSpec from CLI-shaped arguments."""
    return TuneSpec(study=study, base=base, params=parse_space(space), trials=int(trials), **kw).validate()


# ---------------------------------------------------------------- storage


def storage(reg: Registry) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the registry database (the registry keeps its own Alembic version
    table, ``ctxsim_alembic_version``, so the two schemas live side by side)."""
    kw: dict[str, Any] = {}
    if reg.is_sqlite:
        kw["connect_args"] = {"timeout": 60}  # workers write metrics to the same file meanwhile
    else:
        kw["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(reg.url, engine_kwargs=kw)


def open_study(reg: Registry, spec: TuneSpec, sampler: Optional[optuna.samplers.BaseSampler] = None,
               pruner: Optional[optuna.pruners.BasePruner] = None) -> optuna.Study:
    """Creates the study, or loads it when it exists and was started with the same settings."""
    st = storage(reg)
    study = optuna.create_study(study_name=spec.study, storage=st, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    have = study.user_attrs
    want = spec.attrs()
    if not have:
        for k, v in want.items():
            study.set_user_attr(k, v)
        study.set_user_attr("base_config", spec.base.to_dict())
        return study
    for k in _ATTRS:
        if have.get(k) != want[k]:
            raise ConfigError(f"study {spec.study} was started with {k}={_short(have.get(k))}, not {_short(want[k])}: "
                              "rerun it with its own settings or choose another --study name")
    return study


def _short(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def load_existing(reg: Registry, name: str) -> optuna.Study:
    """An existing study, or NotFoundError naming the studies there are."""
    st = storage(reg)
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        hint = f"; studies: {', '.join(sorted(names))}" if names else "; there is no study yet (ctxsim tune ...)"
        raise NotFoundError(f"no study {name!r} in this registry{hint}") from None


def trial_config(spec: TuneSpec, values: dict[str, Any], number: int) -> RunConfig:
    """The base config with a trial's sampled values; named and tagged for the study."""
    cfg = spec.base.with_sets([p.set_arg(values[p.key]) for p in spec.params])
    extra: dict[str, Any] = {"name": f"{spec.study}#{number}",
                             "tags": sorted(set(cfg.tags) | {study_tag(spec.study), f"trial:{number}"})}
    if cfg.select == "best":
        extra["select_metric"] = spec.objective  # the model a trial keeps is the one its value describes
    return cfg.with_overrides(**extra)


def final_value(reg: Registry, job_id: int, cfg_select: str, objective: str) -> Optional[float]:
    """A finished trial's value: its validation ``objective`` at the selected evaluation (the best
    one with select=best, else the last)."""
    pts = metric_series(reg, job_id, [val_key(objective)]).get(val_key(objective), [])
    if not pts:
        return None
    return max(v for _, v in pts) if cfg_select == "best" else pts[-1][1]


# ---------------------------------------------------------------- running trials


@dataclass
class _Live:
    """A trial whose job this tuner follows."""

    trial: optuna.trial.Trial
    job_id: int
    select: str
    reported: set[int] = field(default_factory=set)
    pruning: bool = False


@dataclass
class TuneResult:
    study: str
    finished: int
    complete: int
    pruned: int
    failed: int
    best_value: Optional[float]
    best_params: dict[str, Any]
    best_job: Optional[int]


class _ReportSink:
    """Extra sink of a local trial: validation evaluations reported to Optuna as they happen."""

    def __init__(self, trial: optuna.trial.Trial, objective: str) -> None:
        self.trial, self.objective = trial, objective
        self.pruned = threading.Event()

    def emit(self, event: Event) -> None:
        d = event.data
        if event.kind != "eval" or d.get("split") != VAL_SPLIT or self.objective not in d.get("metrics", {}):
            return
        self.trial.report(float(d["metrics"][self.objective]), int(d["epoch"]))
        if self.trial.should_prune():
            self.pruned.set()

    def close(self) -> None:
        pass


class Tuner:
    """Runs a study to ``spec.trials`` finished trials (see the module docstring)."""

    def __init__(self, reg: Registry, spec: TuneSpec, sampler: Optional[optuna.samplers.BaseSampler] = None,
                 pruner: Optional[optuna.pruners.BasePruner] = None, poll_s: float = 2.0,
                 say: Callable[[str], None] = lambda m: log.info("%s", m), device: str = "auto",
                 should_stop: Optional[Callable[[], bool]] = None, max_consecutive_failures: int = 3) -> None:
        self.reg, self.spec = reg, spec
        self.study = open_study(reg, spec, sampler=sampler, pruner=pruner)
        self.poll_s = poll_s
        self.say = say
        self.device = device
        self.should_stop = should_stop or (lambda: False)
        self.max_failures = max_consecutive_failures
        self._failures = 0
        self._wait = threading.Event()

    # -- bookkeeping ------------------------------------------------------------------------------
    def _finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def _ask(self) -> _Live:
        trial = self.study.ask(distributions(self.spec.params))
        cfg = trial_config(self.spec, trial.params, trial.number)
        executor = jobs.FOREGROUND if self.spec.local else "local"
        jid = jobs.enqueue(self.reg, cfg, name=cfg.name, tags=cfg.tags, priority=self.spec.priority,
                           executor=executor, n_gpus=self.spec.gpus_per_job, force=True)
        trial.set_user_attr("job_id", jid)
        self.say(f"trial {trial.number}: job {jid} {_fmt_params(trial.params)}")
        return _Live(trial, jid, cfg.select)

    def _adopt(self) -> list[_Live]:
        """Trials left running by an earlier tuner: followed again, interrupted jobs retried."""
        out = []
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            jid = ft.user_attrs.get("job_id")
            if jid is None:  # asked, never queued
                self.study.tell(ft.number, state=TrialState.FAIL)
                continue
            cfg = trial_config(self.spec, ft.params, ft.number)
            live = _Live(optuna.trial.Trial(self.study, ft._trial_id), int(jid), cfg.select,
                         reported=set(ft.intermediate_values), pruning=bool(ft.user_attrs.get("pruned_at")))
            state = jobs.job_states(self.reg, [live.job_id]).get(live.job_id)
            if state is not None and state[0] in (JobStatus.CANCELLED, JobStatus.FAILED) and not live.pruning:
                try:
                    jobs.retry(self.reg, live.job_id)
                    self.say(f"trial {ft.number}: job {live.job_id} was {state[0]}: retried (resumes its checkpoint)")
                except JobStateError:
                    pass
            out.append(live)
        return out

    def _tell(self, live: _Live, state: TrialState, value: Optional[float] = None, why: str = "") -> None:
        if state == TrialState.COMPLETE:
            self.study.tell(live.trial, value)
            self._failures = 0
        else:
            self.study.tell(live.trial, state=state)
            self._failures = self._failures + 1 if state == TrialState.FAIL else 0
        word = f"value {value:.4f}" if state == TrialState.COMPLETE else state.name.lower()
        self.say(f"trial {live.trial.number}: {word} (job {live.job_id}{', ' + why if why else ''})")
        if self._failures >= self.max_failures:
            raise RunFailedError(f"study {self.spec.study}: {self._failures} trials failed in a row "
                                 f"(last: job {live.job_id}{', ' + why if why else ''}); see ctxsim logs {live.job_id}")

    def _report(self, live: _Live) -> None:
        key = val_key(self.spec.objective)
        since = {key: max(live.reported)} if live.reported else None
        for step, value in metric_series(self.reg, live.job_id, [key], since_step=since).get(key, []):
            if step in live.reported:
                continue
            live.trial.report(float(value), int(step))
            live.reported.add(int(step))
            if not live.pruning and live.trial.should_prune():
                live.pruning = True
                live.trial.set_user_attr("pruned_at", int(step))
                try:
                    jobs.cancel(self.reg, live.job_id)
                except JobStateError:  # it ended meanwhile: its own status decides
                    pass

    def _settle(self, live: _Live, status: Optional[str]) -> bool:
        """Tells Optuna how a trial ended once its job has; False while the job is still active."""
        if status in (JobStatus.QUEUED, JobStatus.RUNNING):
            return False
        if status == JobStatus.DONE:
            value = final_value(self.reg, live.job_id, live.select, self.spec.objective)
            if value is None:
                self._tell(live, TrialState.FAIL, why=f"no {val_key(self.spec.objective)} series")
            else:
                late = "ended before the pruner's cancel" if live.pruning else ""
                self._tell(live, TrialState.COMPLETE, value, why=late)
        elif status == JobStatus.CANCELLED and live.pruning:
            self._tell(live, TrialState.PRUNED)
        else:
            self._tell(live, TrialState.FAIL, why=f"job {status or 'removed'}")
        return True

    # -- the two modes ----------------------------------------------------------------------------
    def run(self) -> TuneResult:
        if self.spec.local:
            self._run_local()
        else:
            self._run_workers()
        return self.result()

    def _run_workers(self) -> None:
        live = {lv.trial.number: lv for lv in self._adopt()}
        while not self.should_stop():
            while len(live) < self.spec.parallel and self._finished() + len(live) < self.spec.trials:
                lv = self._ask()
                live[lv.trial.number] = lv
            if not live:
                return
            for lv in list(live.values()):
                self._report(lv)
            states = jobs.job_states(self.reg, [lv.job_id for lv in live.values()])
            for n, lv in list(live.items()):
                st = states.get(lv.job_id)
                if self._settle(lv, st[0] if st else None):
                    del live[n]
            if live:
                self._wait.wait(self.poll_s)

    def _run_local(self) -> None:
        from ctxsim.runner.job import run_job_foreground

        pending = self._adopt()
        while not self.should_stop():
            if pending:
                lv = pending.pop(0)
                st = jobs.job_states(self.reg, [lv.job_id]).get(lv.job_id)
                if st is not None and st[0] != JobStatus.QUEUED:
                    self._settle(lv, st[0])  # it ended (or runs elsewhere: then it is followed no more)
                    continue
            elif self._finished() < self.spec.trials:
                lv = self._ask()
            else:
                return
            sink = _ReportSink(lv.trial, self.spec.objective)
            try:
                run_job_foreground(self.reg, lv.job_id, extra_sink=sink, device=self.device,
                               should_stop=lambda sink=sink: sink.pruned.is_set() or self.should_stop())
            except KeyboardInterrupt:
                raise  # the job is cancelled, the trial stays running: a rerun resumes it
            except Exception as e:  # the job is marked failed with its one-line error
                self._tell(lv, TrialState.FAIL, why=one_line(e))
                continue
            if sink.pruned.is_set():
                lv.pruning = True
                lv.trial.set_user_attr("pruned_at", max(lv.trial.storage.get_trial(lv.trial._trial_id)
                                                        .intermediate_values, default=0))
            st = jobs.job_states(self.reg, [lv.job_id]).get(lv.job_id)
            if st is not None and st[0] == JobStatus.CANCELLED and not lv.pruning:
                return  # stopped by should_stop or `ctxsim cancel`: the trial stays running
            self._settle(lv, st[0] if st else None)

    def stop(self) -> None:
        self._wait.set()

    def result(self) -> TuneResult:
        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value) if complete else None
        return TuneResult(
            study=self.spec.study, finished=sum(t.state in FINISHED for t in trials), complete=len(complete),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
            failed=sum(t.state == TrialState.FAIL for t in trials),
            best_value=best.value if best else None, best_params=dict(best.params) if best else {},
            best_job=best.user_attrs.get("job_id") if best else None,
        )


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def default_pruner(kind: str = "median") -> Optional[optuna.pruners.BasePruner]:
    """``median``: stop a trial whose validation value is below the median of earlier trials at
    the same evaluation (after 3 finished trials); ``none``: never prune."""
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    raise ConfigError(f"--pruner must be median or none, got {kind!r}")
