"""ctxsim tune: search-space parsing, studies on Optuna's RDB storage in the registry database, trials
as registry jobs run by real workers (each exactly once, pruned trials cancelled), local trials, reruns
that continue a study, and the CLI (refusal without validation classes, show --json)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from registry_helpers import pg_schema_url
from sqlalchemy import func, select
from typer.testing import CliRunner

from ctxsim.cli.main import app
from ctxsim.errors import ConfigError
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Tag
from ctxsim.registry.queries import metric_series
from ctxsim.train.config import RunConfig
from ctxsim.train.configure import configure
from ctxsim.tuning import Tuner, build_spec, parse_param, parse_space, study_summary
from ctxsim.tuning.space import check_keys

optuna.logging.set_verbosity(optuna.logging.WARNING)

VAL_SETS = ["val_classes=2"]  # trials select on validation classes only
# synthetic: 8 training classes (2 of them validation) x 8 images; 30 short epochs, each evaluated
SYNTH = ["data.num_classes=8", "data.images_per_class=8", "data.test_classes=4", "data.image_size=16",
         "batch_size=16", "samples_per_class=4", "sampler.num_batches=2", "eval_every=1", "device=cpu"]
SPACE = ["lr=loguniform(1e-4,1e-2)"]


def tuning_base(epochs: int = 30) -> RunConfig:
    return configure("synthetic", "contrastive", 256, sets=SYNTH + VAL_SETS, epochs=epochs, seed=0)


class OddTrialsPruner(optuna.pruners.BasePruner):
    """Deterministic: prunes every odd-numbered trial at its first report, never an even one."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1 and bool(trial.intermediate_values)


# ------------------------------------------------------------------ space


def test_space_parses_each_kind():
    p = parse_param("lr=loguniform(1e-5, 1e-3)")
    assert p.key == "lr" and p.distribution == FloatDistribution(1e-5, 1e-3, log=True)
    assert parse_param("loss.lam=uniform(0,1)").distribution == FloatDistribution(0.0, 1.0)
    assert parse_param("loss.lam=uniform(0,1,0.25)").distribution == FloatDistribution(0.0, 1.0, step=0.25)
    assert parse_param("epochs=int(1,5)").distribution == IntDistribution(1, 5)
    assert parse_param("batch_size=logint(16,256)").distribution == IntDistribution(16, 256, log=True)
    d = parse_param("model.pooling=choice(avg, max)").distribution
    assert d == CategoricalDistribution(("avg", "max"))
    assert parse_param("amp=choice(true,false)").distribution == CategoricalDistribution((True, False))
    assert [q.key for q in parse_space(["lr=loguniform(1e-5,1e-3)", "loss.lam=uniform(0,1)"])] == ["lr", "loss.lam"]
    assert parse_param("lr=loguniform(1e-5,1e-3)").set_arg(3e-4) == "lr=0.0003"


@pytest.mark.parametrize("entry, words", [
    ("lr", "key=kind(args)"),
    ("lr=gauss(0,1)", "unknown distribution"),
    ("lr=loguniform(0,1)", "lower bound > 0"),
    ("lr=uniform(1,0)", "below the upper bound"),
    ("lr=uniform(0,x)", "not a number"),
    ("lr=uniform(0,1,2,3)", "takes"),
    ("epochs=int(1,2.5)", "integer bounds"),
    ("model.pooling=choice()", "at least one value"),
    ("model.pooling=choice(avg,avg)", "twice"),
])
def test_space_refuses_bad_entries(entry, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse_param(entry)


def test_space_refuses_repeated_and_unknown_keys():
    with pytest.raises(ConfigError, match="twice"):
        parse_space(["lr=uniform(0.1,1)", "lr=uniform(0.2,1)"])
    with pytest.raises(ConfigError, match="at least one"):
        parse_space([])
    base = configure("synthetic", "contrastive", 256, sets=SYNTH)
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        check_keys(parse_space(["lrr=uniform(0.1,1)"]), base)
    with pytest.raises(ConfigError, match="batch_size"):
        check_keys(parse_space(["batch_size=int(1,3)"]), base)  # 1 is not a multiple of samples_per_class


def test_tune_refuses_a_config_without_validation_classes(tmp_path):
    db = tmp_path / "experiments.db"
    res = CliRunner().invoke(app, ["tune", "-d", "synthetic", "-l", "contrastive", "--study", "s", "--trials", "2",
                                   "--space", "lr=loguniform(1e-4,1e-2)", "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert "val_classes" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_tune_show_unknown_study_is_one_line(tmp_path):
    db = tmp_path / "experiments.db"
    open_registry(db).dispose()
    res = CliRunner().invoke(app, ["tune", "show", "nope", "--db", str(db)])
    assert res.exit_code == 4 and "no study 'nope'" in res.output and len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ studies run by workers


def start_worker(url: str, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--db", url, "--poll", "0.1", "--gpus", "",
            "--device", "cpu"]
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def run_study(url: str, trials: int, deadline_s: float = 900) -> Tuner:
    reg = open_registry(url)
    spec = build_spec("fm-lr", tuning_base(), SPACE, trials, parallel=2)
    end = time.monotonic() + deadline_s
    tuner = Tuner(reg, spec, sampler=optuna.samplers.RandomSampler(seed=0), pruner=OddTrialsPruner(),
                  poll_s=0.1, should_stop=lambda: time.monotonic() > end)
    tuner.run()
    return tuner


def check_study(url: str, n: int) -> dict[int, Job]:
    """n finished trials, one job each run exactly once; pruned <-> cancelled, complete <-> done."""
    reg = open_registry(url)
    study = optuna.load_study(study_name="fm-lr", storage=url)  # plain Optuna on the registry URL
    ts = study.get_trials()
    with reg.Session() as s:
        seen = [(t.number, t.state.name, *(lambda j: (j.status, j.error) if j else (None, None))(
            s.get(Job, t.user_attrs.get("job_id", -1)))) for t in ts]
    assert len(ts) == n and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts), seen
    by_trial: dict[int, Job] = {}
    with reg.Session() as s:
        for t in ts:
            job = s.get(Job, t.user_attrs["job_id"])
            by_trial[t.number] = job
            assert job.attempts == 1
            claims = s.scalar(select(func.count()).select_from(JobEvent)
                              .where(JobEvent.job_id == job.id, JobEvent.kind == "claimed"))
            assert claims == 1
            tags = {r for r in s.scalars(select(Tag.tag).where(Tag.job_id == job.id))}
            assert {"study:fm-lr", f"trial:{t.number}"} <= tags and job.name == f"fm-lr#{t.number}"
            if t.state == TrialState.PRUNED:
                assert job.status == "cancelled" and t.number % 2 == 1
            else:
                assert job.status == "done" and t.value is not None and len(t.intermediate_values) == 30
        assert s.scalar(select(func.count()).select_from(Job)) == n  # no job beyond one per trial
    assert len({j.id for j in by_trial.values()}) == n
    assert any(t.state == TrialState.PRUNED for t in ts)  # odd trials are pruned at their first report
    reg.dispose()
    return by_trial


def _six_trials_two_workers_then_continue(url: str, tmp_path: Path) -> None:
    procs = [start_worker(url, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        run_study(url, 6)
        first = check_study(url, 6)
        values = {t.number: t.value for t in optuna.load_study(study_name="fm-lr", storage=url).get_trials()}
        run_study(url, 8)  # the same command with a larger budget continues the study
        after = check_study(url, 8)
    finally:
        stop_workers(procs)
    logs = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert "Traceback" not in logs
    assert {n: j.id for n, j in after.items() if n < 6} == {n: j.id for n, j in first.items()}
    assert {t.number: t.value for t in optuna.load_study(study_name="fm-lr", storage=url).get_trials()
            if t.number < 6} == values
    assert len({j.worker_id for j in after.values()}) == 2  # both workers took trials


@pytest.mark.slow
def test_six_trials_two_workers_sqlite(tmp_path):
    _six_trials_two_workers_then_continue(f"sqlite:///{tmp_path / 'experiments.db'}", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_six_trials_two_workers_postgres(pg_url, tmp_path):
    with pg_schema_url(pg_url) as url:
        _six_trials_two_workers_then_continue(url, tmp_path)


# ------------------------------------------------------------------ local trials and show


def test_local_trials_prune_and_show(tmp_path):
    url = f"sqlite:///{tmp_path / 'experiments.db'}"
    reg = open_registry(url)
    spec = build_spec("loc", tuning_base(epochs=4), SPACE, 3, local=True)
    res = Tuner(reg, spec, sampler=optuna.samplers.RandomSampler(seed=0), pruner=OddTrialsPruner(),
                poll_s=0.1, device="cpu").run()
    assert (res.finished, res.complete, res.pruned, res.failed) == (3, 2, 1, 0)
    study = optuna.load_study(study_name="loc", storage=url)
    with reg.Session() as s:
        status = {t.number: s.get(Job, t.user_attrs["job_id"]).status for t in study.get_trials()}
    assert status == {0: "done", 1: "cancelled", 2: "done"}
    for t in study.get_trials():  # a trial's value is its job's last validation MAP@R (select=last)
        pts = metric_series(reg, t.user_attrs["job_id"], ["val/MAP@R"])["val/MAP@R"]
        assert t.intermediate_values == dict(pts)
        if t.state == TrialState.COMPLETE:
            assert t.value == pts[-1][1] and len(pts) == 4
        else:
            assert len(pts) < 4  # stopped after its first evaluation
    d = study_summary(reg, "loc")
    assert d["best"]["value"] == max(t.value for t in study.get_trials() if t.state == TrialState.COMPLETE)
    assert [r["state"] for r in d["trials"]] == ["complete", "pruned", "complete"]
    res = CliRunner().invoke(app, ["tune", "show", "loc", "--json", "--db", url])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["best"]["job_id"] == d["best"]["job_id"] and shown["settings"]["space"] == SPACE
    assert "lr" in shown["importances"] and shown["counts"]["pruned"] == 1
    # the same study again with the same budget: nothing more to run
    res2 = Tuner(reg, spec, poll_s=0.1, device="cpu").run()
    assert res2.finished == 3 and len(optuna.load_study(study_name="loc", storage=url).get_trials()) == 3
    # another space under the same name is refused
    with pytest.raises(ConfigError, match="was started with space"):
        Tuner(reg, build_spec("loc", tuning_base(epochs=4), ["lr=uniform(1e-4,1e-2)"], 3, local=True))
    reg.dispose()
