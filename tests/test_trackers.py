"""Trackers as event sinks (ctxsim.trackers): TensorBoard's own reader reads the scalars back; a
missing library is one line with the pip command and no job row; a tracker that fails never fails
the run."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ctxsim import names as ctxsim_names
from ctxsim.cli.main import app
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, Metric
from ctxsim.trackers import SINKS, TRACKER_LIBRARIES, GuardedSink, require_trackers


def _cfg(**kw):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(epochs=2, device="cpu", num_workers=0,
                                                            sampler_kw={"num_batches": 3}, **kw)


def test_tensorboard_mirrors_the_run_and_its_reader_reads_it_back(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard comes with the test extras (pip install -e '.[test]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ctxsim.runner.job import run_job_foreground

    reg = open_registry(str(tmp_path / "e.db"))
    jid = jobs.enqueue(reg, _cfg(track=["tensorboard"]), runs_root=tmp_path / "runs")
    run_job_foreground(reg, jid, device="cpu")
    with reg.Session() as s:
        job = s.get(Job, jid)
        stored = {(m.key, m.step): m.value for m in s.scalars(select(Metric).where(Metric.job_id == jid))}
    assert job.status == "done"
    ea = EventAccumulator(str(tmp_path / "runs" / job.run_dir.rsplit("/", 1)[-1] / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"train/loss", "R@1", "MAP@R", "final/R@1"} <= set(tags)
    for key in ("train/loss", "R@1", "MAP@R"):
        got = {(key, e.step): e.value for e in ea.Scalars(key)}
        want = {k: v for k, v in stored.items() if k[0] == key}
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)
    assert "config" in "".join(ea.Tags()["tensors"])
    reg.dispose()


def test_a_missing_tracker_library_is_one_line_and_no_job(tmp_path, monkeypatch):
    monkeypatch.setattr(ctxsim_names, "tracker_library_available", lambda name: False)
    with pytest.raises(Exception, match=r'tracker tensorboard needs the tensorboard package: pip install "ctxsim\[tensorboard\]"'):
        require_trackers(["tensorboard"])
    db = tmp_path / "e.db"
    r = CliRunner().invoke(app, ["run", "-d", "synthetic", "-l", "hybrid", "--track", "tensorboard", "--db", str(db)])
    assert r.exit_code == 2 and "pip install \"ctxsim[tensorboard]\"" in r.stderr, r.stderr
    if db.exists():
        reg = open_registry(db)
        with reg.Session() as s:
            assert s.scalars(select(Job)).all() == []
        reg.dispose()
    r = CliRunner().invoke(app, ["sweep", "-d", "synthetic", "-l", "hybrid", "--track", "nope", "--db", str(db)])
    assert r.exit_code == 2 and "unknown tracker 'nope' (track: tensorboard, mlflow, wandb)" in r.stderr


def test_a_worker_adds_its_trackers_to_every_job_it_runs(tmp_path, monkeypatch):
    """``ctxsim worker --track tensorboard`` (passed to each job as $CTXSIM_TRACK) mirrors a job
    whose config asks for no tracker; the job's own config is unchanged (its hash too)."""
    pytest.importorskip("tensorboard", reason="tensorboard comes with the test extras (pip install -e '.[test]')")
    from ctxsim.runner.job import WORKER_TRACK_ENV, job_sink

    reg = open_registry(str(tmp_path / "e.db"))
    cfg = _cfg()
    jid = jobs.enqueue(reg, cfg, runs_root=tmp_path / "runs")
    monkeypatch.setenv(WORKER_TRACK_ENV, "tensorboard")
    sink = job_sink(reg, jid, config_json=cfg.to_json(), run_dir=str(tmp_path / "runs" / "x"))
    assert [getattr(s, "name", None) for s in sink.sinks][1:] == ["tensorboard"]
    sink.close()
    monkeypatch.setenv(WORKER_TRACK_ENV, "")
    sink = job_sink(reg, jid, config_json=cfg.to_json(), run_dir=str(tmp_path / "runs" / "x"))
    assert len(sink.sinks) == 1  # the registry's sink only
    sink.close()
    reg.dispose()
    # the worker checks its --track before it claims anything: one line, exit 2
    r = CliRunner().invoke(app, ["worker", "--once", "--track", "nope", "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 2 and "unknown tracker 'nope'" in r.stderr, r.stderr
    monkeypatch.setattr(ctxsim_names, "tracker_library_available", lambda name: False)
    r = CliRunner().invoke(app, ["worker", "--once", "--track", "mlflow", "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 2 and 'pip install "ctxsim[mlflow]"' in r.stderr, r.stderr
    r = CliRunner().invoke(app, ["tune", "-d", "synthetic", "-l", "hybrid", "--study", "s", "--track", "mlflow",
                                 "--space", "lr=loguniform(1e-4,1e-3)", "--set", "val_classes=2", "--db", str(tmp_path / "e.db")])
    assert r.exit_code == 2 and 'pip install "ctxsim[mlflow]"' in r.stderr, r.stderr


def test_every_tracker_has_a_sink():
    assert set(SINKS) == set(TRACKER_LIBRARIES)


def test_a_failing_tracker_never_fails_the_run(tmp_path, caplog):
    """A tracker whose server goes away mid-run: one warning, the tracker is switched off, and the
    run ends done with every metric in the registry."""
    from ctxsim.runner.job import run_job_foreground

    class Flaky:
        def __init__(self) -> None:
            self.seen = 0

        def emit(self, event) -> None:
            self.seen += 1
            if self.seen > 3:
                raise ConnectionError("tracking server went away")

        def close(self) -> None:
            raise ConnectionError("still away")

    flaky = Flaky()
    reg = open_registry(str(tmp_path / "e.db"))
    jid = jobs.enqueue(reg, _cfg(), runs_root=tmp_path / "runs")
    with caplog.at_level(logging.WARNING, logger="ctxsim.trackers"):
        run_job_foreground(reg, jid, extra_sink=GuardedSink(flaky, "flaky"), device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.name == "ctxsim.trackers"]
    assert len(warnings) == 1 and "tracker flaky failed (emit: tracking server went away)" in warnings[0]
    assert flaky.seen == 4  # switched off after the failure
    with reg.Session() as s:
        assert s.get(Job, jid).status == "done"
        assert s.scalar(select(Metric.step).where(Metric.job_id == jid, Metric.key == "train/loss")
                        .order_by(Metric.step.desc()).limit(1)) == 6
    reg.dispose()


class _StopAfterFirstEpoch:
    """A sink that asks the run to stop once epoch 1's checkpoint is written."""

    def __init__(self) -> None:
        self.stop = False

    def emit(self, event) -> None:
        if event.kind == "checkpoint" and event.data.get("epoch") == 1:
            self.stop = True

    def close(self) -> None:
        pass


def _run_in_two_parts(tmp_path, track: str):
    """A 2-epoch run stopped after epoch 1 and resumed in the same folder (a second job)."""
    from ctxsim.runner.job import run_job_foreground

    reg = open_registry(str(tmp_path / "e.db"))
    run_dir = tmp_path / "runs" / "the-run"
    cfg = _cfg(track=[track])
    ((first, _),) = jobs.enqueue_many(reg, [cfg], run_dirs=[run_dir])
    stopper = _StopAfterFirstEpoch()
    run_job_foreground(reg, first, extra_sink=stopper, device="cpu", should_stop=lambda: stopper.stop)
    id_after_first = (run_dir / f"{track}_run_id").read_text()
    if track == "mlflow":  # the stopped part left its MLflow run KILLED, not RUNNING
        from mlflow.tracking import MlflowClient

        assert MlflowClient().get_run(id_after_first.strip()).info.status == "KILLED"
    ((second, _),) = jobs.enqueue_many(reg, [cfg], run_dirs=[run_dir], force=True)
    run_job_foreground(reg, second, device="cpu")
    with reg.Session() as s:
        assert s.get(Job, second).status == "done"
        stored = {(m.key, m.step): m.value for m in s.scalars(select(Metric).where(Metric.job_id.in_([first, second])))}
    reg.dispose()
    assert (run_dir / f"{track}_run_id").read_text() == id_after_first  # the same tracker run, resumed
    return run_dir, id_after_first.strip(), stored


def test_mlflow_keeps_one_run_across_a_resume_and_its_client_reads_the_history(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow comes with the test extras (pip install -e '.[test]')")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file: store, offline
    from mlflow.tracking import MlflowClient

    run_dir, run_id, stored = _run_in_two_parts(tmp_path, "mlflow")
    client = MlflowClient()
    exp = client.get_experiment_by_name("ctxsim-synthetic")  # one experiment per dataset
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    for key, mkey in (("R@1", "R_at_1"), ("MAP@R", "MAP_at_R"), ("train/loss", "train/loss")):
        history = {(key, m.step): m.value for m in client.get_metric_history(run_id, mkey)}
        want = {k: v for k, v in stored.items() if k[0] == key}
        assert history.keys() == want.keys() and all(history[k] == pytest.approx(want[k]) for k in want), key
    assert {s for k, s in stored if k == "R@1"} == {1, 2}  # both parts of the run are in it
    assert runs[0].data.params["seed"] == "0" and runs[0].data.tags["ctxsim.loss"] == "hybrid"


def test_wandb_offline_keeps_one_run_across_a_resume_and_reads_back(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb comes with the test extras (pip install -e '.[test]')")
    import shutil
    import subprocess

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, run_id, stored = _run_in_two_parts(tmp_path, "wandb")
    files = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # the first part and the resumed part, one W&B run id
    wandb_cli = shutil.which("wandb") or "wandb"
    history: dict = {}
    for f in files:
        out = subprocess.run([wandb_cli, "leet", "inspect", "--json", str(f)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        for line in out.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            item = (rec.get("history") or {}).get("item") or {}
            for key in ("R@1", "MAP@R", "train/loss"):
                if key in item:
                    step = item["train/step"] if key.startswith("train/") else item["epoch"]
                    history[(key, step)] = item[key]
    want = {k: v for k, v in stored.items() if k[0] in ("R@1", "MAP@R", "train/loss")}
    assert history.keys() == want.keys() and all(history[k] == pytest.approx(want[k]) for k in want)


def test_a_hanging_tracker_never_slows_the_run(caplog):
    """A tracker whose server hangs: emit returns at once (a queue feeds a thread), the tracker is
    switched off once it falls max_backlog events behind, and close gives up after its timeout."""
    import threading

    from ctxsim.train.events import Event

    release = threading.Event()

    class Hanging:
        def emit(self, event) -> None:
            release.wait()

        def close(self) -> None:
            release.wait()

    sink = GuardedSink(Hanging(), "hanging", max_backlog=5, close_timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="ctxsim.trackers"):
        for step in range(1, 50):
            sink.emit(Event("step", {"step": step, "loss": 1.0, "terms": {}}, float(step)))
        sink.close()
    release.set()
    messages = [r.getMessage() for r in caplog.records if r.name == "ctxsim.trackers"]
    assert sink.failed and any("fell 5 events behind" in m for m in messages), messages
