"""The Slurm executor (ctxsim.runner.slurm) through submitit's LOCAL executor: options, state
mapping, and four queued jobs run by ``ctxsim worker --executor slurm``: a tiny training job
finishes; a probe job that runs until stopped is cancelled while running; a probe job is preempted
(USR2, as Slurm signals before a time limit or a preemption), requeued in place and resumed from
its epoch checkpoint; and one whose task is SIGKILLed (a node failure) is resubmitted by the poller
and resumes from its epoch checkpoint. The probes wait at a gate file the test creates (after
epoch 1), so every signal lands at a known point: no race against a job's end on a fast machine.
(The training engine's own mid-epoch stop and resume: tests/test_train.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from proc_helpers import wait_for
from sqlalchemy import func, select

from ctxsim.errors import ConfigError
from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric
from ctxsim.runner.probe import probe_config
from ctxsim.runner.slurm import SlurmOptions, SlurmWorker, state_action, url_for_nodes
from ctxsim.train.events import read_events


def test_slurm_states_map_to_registry_actions():
    assert state_action("RUNNING") == state_action("PENDING") == state_action("REQUEUED") == "active"
    assert state_action("COMPLETED") == state_action("FINISHED") == "ended"
    assert state_action("FAILED") == state_action("OUT_OF_MEMORY") == state_action("INTERRUPTED") == "crashed"
    assert state_action("TIMEOUT") == state_action("PREEMPTED") == state_action("NODE_FAIL") == "requeue"
    assert state_action("CANCELLED by 1234") == state_action("CANCELLED+") == "cancelled"
    assert state_action("UNKNOWN") == state_action("") == "active"  # sacct lag: ask again later


def test_options_from_file_and_command_line(tmp_path):
    toml = tmp_path / "slurm.toml"
    toml.write_text('[slurm]\npartition = "gpu"\ntime = 120\ngpus-per-node = 4\naccount = "lab"\n'
                    'additional = { "mail-type" = "END" }\n')
    o = SlurmOptions.from_file(toml, partition="long", time_min=None)
    assert (o.partition, o.time_min, o.gpus_per_node, o.account) == ("long", 120, 4, "lab")  # the CLI wins
    p = o.executor_parameters(2, "ctxsim-7")
    assert p["gpus_per_node"] == 2 and p["timeout_min"] == 120 and p["slurm_partition"] == "long"
    assert p["slurm_account"] == "lab" and p["slurm_additional_parameters"] == {"mail-type": "END"}
    js = tmp_path / "slurm.json"
    js.write_text(json.dumps({"time": 30, "qos": "high"}))
    assert SlurmOptions.from_file(js).executor_parameters(0, "x")["slurm_qos"] == "high"
    js.write_text(json.dumps({"partiton": "gpu"}))
    with pytest.raises(ConfigError, match="unknown slurm option 'partiton'"):
        SlurmOptions.from_file(js)
    with pytest.raises(ConfigError, match="--time must be > 0"):
        SlurmOptions(time_min=0).validate()
    # Slurm may send USR2 up to 60 s early: 1 min with a 45 s delay would signal every start
    with pytest.raises(ConfigError, match=r"signal_delay_s \(45\) plus the 60 s.*time limit \(1 min\)"):
        SlurmOptions(time_min=1, signal_delay_s=45).validate()
    assert SlurmOptions(time_min=2, signal_delay_s=59).validate().time_min == 2
    with pytest.raises(ConfigError, match="signal_delay_s"):
        SlurmOptions(time_min=2, signal_delay_s=60).validate()
    assert SlurmOptions(cluster="local", time_min=1, signal_delay_s=45).validate().cluster == "local"
    with pytest.raises(ConfigError, match="slurm-config"):
        SlurmOptions.from_file(tmp_path / "missing.toml")


def test_node_url_never_carries_the_password():
    u = url_for_nodes("postgresql+psycopg://lab:s3cret@db.example:5432/ctx")
    assert "s3cret" not in u and u.startswith("postgresql+psycopg://lab@db.example")
    assert url_for_nodes("sqlite:////shared/exp.db") == "sqlite:////shared/exp.db"


def test_bad_slurm_options_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--executor", "slurm", "--time", "0",
                        "--db", str(tmp_path / "e.db")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --time must be > 0 minutes, got 0"]
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "sweep", "-d", "synthetic", "-l", "hybrid",
                        "--executor", "pbs", "--db", str(tmp_path / "e.db")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--executor must be local or slurm" in r.stderr and "Traceback" not in r.stderr


def test_slurm_and_local_workers_share_the_loop_and_its_registry_backoff(tmp_path, monkeypatch):
    """One loop (ctxsim.runner.skeleton) for both executors: a registry error never ends the Slurm
    poller either; it backs off poll_s * 2^n, like the local worker."""
    from sqlalchemy.exc import OperationalError

    from ctxsim.runner.skeleton import WorkerLoop
    from ctxsim.runner.worker import LocalWorker

    assert SlurmWorker.run is LocalWorker.run is WorkerLoop.run
    reg = open_registry(str(tmp_path / "e.db"))
    said: list[str] = []
    w = SlurmWorker(reg, SlurmOptions(cluster="local", folder=str(tmp_path / "slurm")), poll_s=0.5, once=True,
                    on_message=said.append)
    calls = []

    def flaky_follow() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    waits: list[float] = []
    monkeypatch.setattr(w, "collect", flaky_follow)
    monkeypatch.setattr(w._stopping, "wait", lambda t=None: waits.append(t) or False)
    assert w.run() == 0  # nothing queued: the third pass drains and ends the loop
    assert len(calls) == 3 and waits == [1.0, 2.0]
    assert [m for m in said if "registry error" in m] == [
        "registry error (server closed the connection unexpectedly); retrying in 1 s",
        "registry error (server closed the connection unexpectedly); retrying in 2 s"]
    with reg.Session() as s:
        from ctxsim.registry.models import Worker

        assert s.get(Worker, w.id).status == "stopped"
    reg.dispose()


# ------------------------------------------------------------------ jobs through submitit's local executor


def _tiny(num_batches: int, seed: int, epochs: int = 1):
    from ctxsim.train import recipe

    return recipe("synthetic", "hybrid", 256).with_overrides(
        epochs=epochs, device="cpu", num_workers=0, seed=seed, sampler_kw={"num_batches": num_batches})


def _row(reg, jid) -> Job:
    with reg.Session() as s:
        return s.get(Job, jid)


def _gone(pid: int) -> bool:
    """The process ``pid`` has exited (a zombie nobody has reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def _kinds(reg, jid) -> list[str]:
    with reg.Session() as s:
        return list(s.scalars(select(JobEvent.kind).where(JobEvent.job_id == jid)))


def _wait(cond, timeout: float, what: str):
    return wait_for(cond, timeout, what)


def test_probe_gate_holds_the_probe_until_opened_or_stopped(tmp_path):
    """The gate the test below relies on: the probe runs no step past ``gate_step`` until the gate
    file exists, and still stops at once when asked while it waits."""
    import threading

    from ctxsim.runner.probe import run_probe

    class Steps:
        def __init__(self) -> None:
            self.steps: list[int] = []
            self.at_gate = threading.Event()

        def emit(self, event) -> None:
            if event.kind == "step":
                self.steps.append(event.data["step"])
            if event.kind == "checkpoint":
                self.at_gate.set()

        def close(self) -> None:
            pass

    gate = tmp_path / "gate"
    cfg = probe_config(epochs=2, steps_per_epoch=3, gate_file=gate, gate_step=3)
    stop = threading.Event()
    sink, out = Steps(), {}
    t = threading.Thread(target=lambda: out.update(run_probe(cfg, sink, tmp_path / "a", stop.is_set)))
    t.start()
    assert sink.at_gate.wait(30)
    stop.set()
    t.join(30)
    assert not t.is_alive() and out["stopped"] and sink.steps == [1, 2, 3]
    gate.touch()  # open: the resumed probe runs epoch 2 through
    sink = Steps()
    assert run_probe(cfg, sink, tmp_path / "a", lambda: False) == {"epochs_run": [2], "stopped": False,
                                                                   "start_epoch": 1}
    assert sink.steps == [4, 5, 6]
    assert "gate" not in probe_config()  # probes without one are unchanged


@pytest.mark.slow
def test_local_executor_runs_cancels_preempts_and_resubmits_jobs(tmp_path):
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    # the job to cancel runs until it is stopped (a probe of a million steps): the cancel cannot
    # lose a race with the job's end, however fast the machine
    until_stopped = probe_config(epochs=1, steps_per_epoch=1_000_000, sleep_s=0.01, label="cancel")
    # the jobs to preempt and to kill stop at a gate after epoch 1 (its checkpoint written) until the
    # test opens it: they cannot end before the signal, nor run on before their first process is gone
    preempt_gate, crash_gate = tmp_path / "preempt.gate", tmp_path / "crash.gate"
    gated = [probe_config(epochs=2, steps_per_epoch=3, label=name, gate_file=gate, gate_step=3)
             for name, gate in (("preempt", preempt_gate), ("crash", crash_gate))]
    ids = jobs.enqueue_many(reg, [_tiny(4, 0), until_stopped, *gated], executor="slurm", runs_root=tmp_path / "runs")
    done_id, cancel_id, preempt_id, crash_id = (i for i, _ in ids)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--executor", "slurm", "--slurm-cluster", "local",
            "--once", "--poll", "0.3", "--grace", "20", "--time", "30", "--device", "cpu", "--db", url]
    with open(log, "ab") as fh:
        worker = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # the compute-node task records itself on the job; the probe reports step 3 (flushed with
        # epoch 1's checkpoint) and then waits at its gate
        _wait(lambda: _row(reg, preempt_id).last_step >= 3 and _row(reg, preempt_id).worker_pid, 180,
              "the preempted job to reach its gate")
        # what Slurm sends before a time limit / on preemption
        os.kill(_row(reg, preempt_id).worker_pid, signal.SIGUSR2)
        # the task records the requeue once the stopped process has exited: only then may the job go on
        _wait(lambda: "slurm_requeue" in _kinds(reg, preempt_id), 180, "the preempted job's requeue")
        preempt_gate.touch()
        _wait(lambda: _row(reg, cancel_id).last_step >= 2, 180, "the cancelled job to start")
        assert jobs.cancel(reg, cancel_id) == "cancel_requested"
        crash_dir = Path(_row(reg, crash_id).run_dir)
        _wait(lambda: (crash_dir / "checkpoint.json").exists(), 180, "the crashed job's first epoch checkpoint")
        job_pid = int((crash_dir / "probe_attempts.log").read_text().split()[0])
        os.kill(_row(reg, crash_id).worker_pid, signal.SIGKILL)  # the node task dies: no settling
        # the orphaned job process stops itself when its task is gone; only then open the gate
        _wait(lambda: _gone(job_pid), 60, "the killed task's job process to stop")
        crash_gate.touch()
        rc = worker.wait(timeout=300)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 0, text
    assert "Traceback" not in text, text

    rows = {j: _row(reg, j) for j in (done_id, cancel_id, preempt_id)}
    assert {j: r.status for j, r in rows.items()} == {done_id: "done", cancel_id: "cancelled", preempt_id: "done"}, \
        [(r.id, r.status, r.error) for r in rows.values()]
    assert all(r.slurm_id and r.executor == "slurm" and r.attempts == 1 for r in rows.values())
    crashed = _row(reg, crash_id)
    assert (crashed.status, crashed.attempts, crashed.last_step) == ("done", 2, 6), crashed.error
    assert rows[cancel_id].error.startswith("cancelled by request")
    assert rows[cancel_id].last_step < 1_000_000
    assert rows[done_id].last_step == 4 and rows[preempt_id].last_step == 6
    with reg.Session() as s:
        n_loss = s.scalar(select(func.count()).select_from(Metric)
                          .where(Metric.job_id == preempt_id, Metric.key == "train/loss"))
    kinds = _kinds(reg, preempt_id)
    assert kinds.count("slurm_submitted") == 1  # requeued in place: the same Slurm job, the same attempt
    assert kinds.count("slurm_requeue") == 1 and kinds.count("slurm_start") == 2
    assert n_loss == 6  # every step once: nothing lost, nothing duplicated
    # the second start resumed from the checkpoint the preempted process wrote after epoch 1, and
    # ran only the steps of epoch 2
    events = [e.to_dict() for e in read_events(Path(rows[preempt_id].run_dir) / "events.jsonl")]
    assert [e["start_epoch"] for e in events if e["kind"] == "start"] == [0, 1]
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    # the killed task: the poller saw its Slurm job end unsettled, re-queued it (an attempt) and
    # submitted a new Slurm job, which resumed from the end of epoch 1
    with reg.Session() as s:
        n_loss = s.scalar(select(func.count()).select_from(Metric)
                          .where(Metric.job_id == crash_id, Metric.key == "train/loss"))
    kinds = _kinds(reg, crash_id)
    assert kinds.count("slurm_submitted") == 2 and kinds.count("requeued") == 1
    assert n_loss == 6
    events = [e.to_dict() for e in read_events(crash_dir / "events.jsonl")]
    assert [e["start_epoch"] for e in events if e["kind"] == "start"] == [0, 1]
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    reg.dispose()


def test_slurm_states_come_from_one_squeue_and_one_sacct_call():
    """Batched state polling (ctxsim.runner.slurm_states): one squeue call for every followed job
    (array tasks and reasons included), one sacct call for those squeue no longer knows, GONE when
    accounting is off; a failing squeue is an error, not a guess."""
    import subprocess as sp

    from ctxsim.runner.slurm_states import GONE, SlurmQueryError, query_states

    calls: list[list[str]] = []

    def fake(argv, **kw):
        calls.append(argv)
        if argv[0] == "squeue":
            assert argv[argv.index("-j") + 1] == "12,40,7"
            out = "12|RUNNING|None\n40_1|PENDING|Resources\n40_2|CANCELLED|None\n12.batch|RUNNING|None\n"
            return sp.CompletedProcess(argv, 0, out, "")
        return sp.CompletedProcess(argv, 0, "7|CANCELLED by 0\n7.batch|CANCELLED\n", "")

    got = query_states(["12", "40_1", "40_2", "7"], run=fake)
    assert got == {"12": "RUNNING", "40_1": "PENDING (Resources)", "40_2": "CANCELLED", "7": "CANCELLED by 0"}
    assert [c[0] for c in calls] == ["squeue", "sacct"] and calls[1][calls[1].index("-j") + 1] == "7"
    assert state_action(got["40_1"]) == "active" and state_action(got["7"]) == "cancelled"

    def no_accounting(argv, **kw):
        if argv[0] == "squeue":
            return sp.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Invalid job id specified\n")
        return sp.CompletedProcess(argv, 1, "", "Slurm accounting storage is disabled\n")

    assert query_states(["5"], run=no_accounting) == {"5": GONE} and state_action(GONE) == "crashed"
    assert query_states([], run=no_accounting) == {}
    down = lambda argv, **kw: sp.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Unable to contact slurm controller\n")  # noqa: E731
    with pytest.raises(SlurmQueryError, match="Unable to contact slurm controller"):
        query_states(["5"], run=down)


def test_a_job_killed_by_slurms_own_warning_signal_is_recognised():
    """ExitCode 140:0 (exit status 128 + SIGUSR2) or 0:12 in scontrol's record: the requeued job died
    of Slurm's warning signal before its handler (not the job's fault); anything else is."""
    import subprocess as sp

    from ctxsim.runner.slurm_states import killed_by_warning_signal

    def record(code):
        return lambda argv, **kw: sp.CompletedProcess(argv, 0, f"JobId=6 JobName=x JobState=FAILED ExitCode={code} Restarts=1\n", "")

    assert killed_by_warning_signal("6", run=record("140:0")) and killed_by_warning_signal("6", run=record("0:12"))
    assert not killed_by_warning_signal("6", run=record("1:0")) and not killed_by_warning_signal("6", run=record("0:9"))
    assert not killed_by_warning_signal("6", run=lambda argv, **kw: sp.CompletedProcess(argv, 1, "", "Invalid job id"))
