"""The Slurm path against a real cluster: ``.ci/start-slurm.sh`` starts munged, slurmctld and slurmd
on 127.0.0.1 (Slurm 22.05, accounting off). ``ctxsim worker --executor slurm`` runs in a subprocess
as a user would start it; the jobs are probes held at a gate file (``ctxsim.runner.probe``) or a tiny
training run. Every test waits on events (registry rows, job events, Slurm states), never on a
sleep. Skipped where no cluster answers, failed under CI=true (CI starts one)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require
from proc_helpers import wait_for
from sqlalchemy import func, select

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, JobEvent, Metric, Summary
from ctxsim.runner.probe import probe_config
from ctxsim.runner.slurm_states import query_states
from ctxsim.train.events import read_events

pytestmark = [pytest.mark.slurm_cluster, pytest.mark.slow]

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # Slurm exports it to the jobs


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    # any state a node passes through between tests (completing, mixed...) but down, drained or failed
    states = [s.strip().rstrip("*~#$@^-!%") for s in r.stdout.split()]
    return r.returncode == 0 and any(s and not s.startswith(("down", "drain", "fail", "unknown", "not_responding"))
                                     for s in states)


@pytest.fixture
def cluster(tmp_path):
    """A registry and run root for one test on the real cluster; afterwards every Slurm job it
    submitted is cancelled and the node is back up."""
    require(_cluster_answers(), "no Slurm cluster answers (sinfo); start one: eval \"$(bash .ci/start-slurm.sh)\"")
    url = str(tmp_path / "experiments.db")
    reg = open_registry(url)
    yield reg
    with reg.Session() as s:
        ids = [i for i in s.scalars(select(Job.slurm_id).where(Job.slurm_id.is_not(None)))]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    subprocess.run(["scontrol", "update", f"nodename={_node()}", "state=resume"], capture_output=True, timeout=60)
    reg.dispose()


def _node() -> str:
    r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=20)
    return (r.stdout.split() or [socket.gethostname()])[0]


class Poller:
    """``ctxsim worker --executor slurm`` in its own process group, its output in a log file."""

    def __init__(self, tmp_path: Path, reg, *extra: str, name: str = "worker") -> None:
        self.log = tmp_path / f"{name}.log"
        argv = [sys.executable, "-m", "ctxsim.cli.main", "worker", "--executor", "slurm", "--slurm-cluster", "slurm",
                "--poll", "0.3", "--grace", "10", "--device", "cpu", "--gpus-per-node", "0",
                "--db", reg.url.removeprefix("sqlite:///"), *extra]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the poller did not exit within {timeout} s:\n{self.text()}") from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.wait(120)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(60)


def _wait(cond, timeout: float, what: str, poller: Poller | None = None):
    return wait_for(cond, timeout, what, poller.text if poller else None)


def _row(reg, jid) -> Job:
    with reg.Session() as s:
        return s.get(Job, jid)


def _events(reg, jid) -> list[tuple[str, str]]:
    with reg.Session() as s:
        return [(e.kind, e.message or "") for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid)
                                                             .order_by(JobEvent.id))]


def _kinds(reg, jid) -> list[str]:
    return [k for k, _m in _events(reg, jid)]


def _n_metric(reg, jid, key="train/loss") -> int:
    with reg.Session() as s:
        return s.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == jid, Metric.key == key))


def _slurm_state(reg, jid) -> str:
    sid = _row(reg, jid).slurm_id
    return query_states([sid])[sid] if sid else ""


def _enqueue(reg, tmp_path, cfgs) -> list[int]:
    return [i for i, _new in jobs.enqueue_many(reg, cfgs, executor="slurm", runs_root=tmp_path / "runs")]


def _gated(tmp_path, label: str, gate_step: int = 3, steps: int = 3):
    gate = tmp_path / f"{label}.gate"
    return probe_config(epochs=2, steps_per_epoch=steps, sleep_s=0.05, label=label, gate_file=gate,
                        gate_step=gate_step), gate


def _at_step(reg, jid, step: int) -> bool:
    """The job's own event file (written as it goes; the registry gets steps in batches) has ``step``."""
    run_dir = _row(reg, jid).run_dir
    path = Path(run_dir) / "events.jsonl" if run_dir else None
    if path is None or not path.exists():
        return False
    try:
        return any(e.kind == "step" and e.to_dict().get("step") == step for e in read_events(path))
    except (ValueError, OSError):  # a line being written
        return False


def _start_epochs(reg, jid) -> list[int]:
    events = read_events(Path(_row(reg, jid).run_dir) / "events.jsonl")
    return [e.to_dict()["start_epoch"] for e in events if e.kind == "start"]


def _resumed_in_place(reg, jid) -> None:
    """Done in its first attempt and its one Slurm submission, resumed from epoch 1's checkpoint,
    every step's metric stored once."""
    row = _row(reg, jid)
    assert (row.status, row.attempts, row.last_step) == ("done", 1, 6), row.error
    assert _kinds(reg, jid).count("slurm_submitted") == 1
    assert _start_epochs(reg, jid) == [0, 1]
    assert _n_metric(reg, jid) == 6


def test_slurm_cluster_runs_a_training_job_with_the_metrics_of_a_local_run(cluster, tmp_path):
    """submit -> done on the cluster; the same config through a local worker gives the same metrics."""
    from ctxsim.train import recipe

    cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=1, device="cpu", num_workers=0, seed=0,
                                                            sampler_kw={"num_batches": 4})
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    poller = Poller(tmp_path, cluster, "--once")
    assert poller.wait() == 0, poller.text()
    row = _row(cluster, jid)
    assert (row.status, row.attempts, row.executor) == ("done", 1, "slurm"), (row.error, poller.text())
    assert row.slurm_id and _slurm_state(cluster, jid).startswith("COMPLETED")
    kinds = _kinds(cluster, jid)
    assert kinds.count("slurm_submitted") == 1 and kinds.count("slurm_start") == 1

    local = open_registry(str(tmp_path / "local.db"))
    (lid, _), = jobs.enqueue_many(local, [cfg], runs_root=tmp_path / "local-runs")
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--device", "cpu",
                        "--db", str(tmp_path / "local.db")], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0 and _row(local, lid).status == "done", r.stdout + r.stderr

    def finals(reg, j) -> dict[str, float]:
        with reg.Session() as s:
            return {m.key: m.last for m in s.scalars(select(Summary).where(Summary.job_id == j))
                    if m.key.startswith(("R@", "MAP@R", "train/loss", "epoch/loss"))}

    on_slurm, here = finals(cluster, jid), finals(local, lid)
    assert {"R@1", "MAP@R", "train/loss"} <= set(on_slurm) and set(on_slurm) == set(here)
    assert on_slurm == pytest.approx(here, rel=1e-6, abs=1e-9)
    local.dispose()


def test_slurm_cluster_cancels_a_running_and_a_pending_job(cluster, tmp_path):
    """``ctxsim cancel`` of a job Slurm still holds pending scancels it at once; of a running one,
    the task stops it gracefully. Both rows say cancelled; neither ran to its end."""
    options = tmp_path / "slurm.json"
    options.write_text(json.dumps({"cpus_per_task": os.cpu_count() or 1}))  # one job at a time: the second pends
    (cfg_a, _gate_a), (cfg_b, _gate_b) = _gated(tmp_path, "running"), _gated(tmp_path, "pending")
    a, b = _enqueue(cluster, tmp_path, [cfg_a, cfg_b])
    poller = Poller(tmp_path, cluster, "--once", "--slurm-config", str(options))
    try:
        _wait(lambda: _row(cluster, a).last_step >= 3, 180, "the running job at its gate", poller)
        _wait(lambda: _slurm_state(cluster, b).startswith("PENDING"), 60, "the second job pending in Slurm", poller)
        cancel = [sys.executable, "-m", "ctxsim.cli.main", "cancel", "--db", cluster.url.removeprefix("sqlite:///")]
        r = subprocess.run([*cancel, str(b)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _wait(lambda: _row(cluster, b).status == "cancelled", 60, "the pending job cancelled", poller)
        assert _slurm_state(cluster, b).startswith("CANCELLED")
        r = subprocess.run([*cancel, str(a)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _wait(lambda: _row(cluster, a).status == "cancelled", 120, "the running job cancelled", poller)
        assert poller.wait() == 0, poller.text()
    finally:
        poller.kill()
    ra, rb = _row(cluster, a), _row(cluster, b)
    assert ra.error.startswith("cancelled by request") and ra.last_step < 6
    assert rb.last_step in (0, None) and "slurm_start" not in _kinds(cluster, b)
    assert "Traceback" not in poller.text()


def test_slurm_cluster_scancel_outside_ctxsim_cancels_the_job(cluster, tmp_path):
    """``scancel`` typed by a user: the job stops (keeping its checkpoint) and its row says
    cancelled, never done, and it is not queued again."""
    cfg, gate = _gated(tmp_path, "outside")
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    poller = Poller(tmp_path, cluster, "--once")
    try:
        _wait(lambda: _row(cluster, jid).last_step >= 3, 180, "the job at its gate", poller)
        subprocess.run(["scancel", _row(cluster, jid).slurm_id], check=True, timeout=60)
        _wait(lambda: _row(cluster, jid).status != "running", 120, "the job settled", poller)
        gate.touch()  # were it run again, it would now finish
        assert poller.wait() == 0, poller.text()
    finally:
        poller.kill()
    row = _row(cluster, jid)
    assert row.status == "cancelled" and "cancelled outside ctxsim" in row.error, (row.status, row.error)
    assert row.attempts == 1 and row.last_step < 6 and "done" not in _kinds(cluster, jid)
    assert _kinds(cluster, jid).count("slurm_submitted") == 1


def test_slurm_cluster_scontrol_requeue_resumes_from_the_checkpoint(cluster, tmp_path):
    """``scontrol requeue`` mid-epoch: the same Slurm job runs again (restart 1, the same attempt),
    resumes from the epoch checkpoint, and every step's metric is stored once."""
    cfg, gate = _gated(tmp_path, "requeue", gate_step=4)  # held in epoch 2, after epoch 1's checkpoint
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    poller = Poller(tmp_path, cluster, "--once")
    try:
        _wait(lambda: _at_step(cluster, jid, 4), 180, "the job in its second epoch", poller)
        subprocess.run(["scontrol", "requeue", _row(cluster, jid).slurm_id], check=True, timeout=60)
        _wait(lambda: _kinds(cluster, jid).count("slurm_start") == 2, 180, "the requeued job running again", poller)
        gate.touch()
        assert poller.wait() == 0, poller.text()
    finally:
        poller.kill()
    _resumed_in_place(cluster, jid)
    events = _events(cluster, jid)
    starts = [m for k, m in events if k == "slurm_start"]
    assert "Slurm restart 1" in starts[1] and "restart" not in starts[0]
    assert any(k == "slurm_state" and "requeued by Slurm" in m for k, m in events), events


def test_slurm_cluster_time_limit_requeues_through_submitit_then_done(cluster, tmp_path):
    """A time limit shorter than the run: USR2 before the limit, the task stops the job (its
    checkpoint kept) and submitit requeues it; it resumes from the checkpoint and ends done.
    Slurm may signal up to 60 s early, so with 2 min and 30 s the signal comes 30-90 s into a run
    (with 1 min it could come as each run starts; validate() now refuses that)."""
    options = tmp_path / "slurm.toml"
    options.write_text("[slurm]\ntime = 2\nsignal_delay_s = 30\nmax_num_timeout = 3\n")
    cfg, gate = _gated(tmp_path, "timeout")
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    poller = Poller(tmp_path, cluster, "--once", "--slurm-config", str(options))
    try:
        _wait(lambda: "slurm_requeue" in _kinds(cluster, jid), 240, "the time limit's requeue", poller)
        _wait(lambda: _kinds(cluster, jid).count("slurm_start") == 2, 180, "the requeued job running again", poller)
        gate.touch()
        assert poller.wait() == 0, poller.text()
    finally:
        poller.kill()
    assert not any("killed by Slurm's warning signal" in m for _k, m in _events(cluster, jid))
    _resumed_in_place(cluster, jid)


def test_slurm_cluster_killed_poller_is_followed_by_the_next_one(cluster, tmp_path):
    """The poller SIGKILLed while its job runs: the job goes on (it heartbeats itself); a new
    poller follows it (here: settles a scancel only a poller can see) and submits no duplicate."""
    cfg, gate = _gated(tmp_path, "orphan")
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    first = Poller(tmp_path, cluster, "--heartbeat-expiry", "6", name="first")
    try:
        _wait(lambda: _row(cluster, jid).last_step >= 3, 180, "the job at its gate", first)
    finally:
        first.kill()
    second = Poller(tmp_path, cluster, "--heartbeat-expiry", "6", name="second")
    try:
        _wait(lambda: "following slurm job" in second.text(), 60, "the new poller to follow the job", second)
        assert _row(cluster, jid).status == "running"
        subprocess.run(["scancel", _row(cluster, jid).slurm_id], check=True, timeout=60)
        _wait(lambda: _row(cluster, jid).status == "cancelled", 120, "the scancel settled by the new poller", second)
        gate.touch()
        assert second.stop() == 0, second.text()
    finally:
        second.kill()
    row = _row(cluster, jid)
    assert "cancelled outside ctxsim" in row.error and row.attempts == 1
    assert _kinds(cluster, jid).count("slurm_submitted") == 1 and "requeued" not in _kinds(cluster, jid)


def test_slurm_cluster_two_pollers_run_each_of_20_jobs_once(cluster, tmp_path):
    """20 queued jobs, two pollers at once: every job claimed, submitted and run exactly once."""
    cfgs = [probe_config(epochs=1, steps_per_epoch=2, label=f"many-{i}") for i in range(20)]
    ids = _enqueue(cluster, tmp_path, cfgs)
    pollers = [Poller(tmp_path, cluster, "--once", name=f"p{i}") for i in range(2)]
    try:
        for p in pollers:
            assert p.wait(600) == 0, p.text()
    finally:
        for p in pollers:
            p.kill()
    rows = [_row(cluster, j) for j in ids]
    assert [r.status for r in rows] == ["done"] * 20, [(r.id, r.status, r.error) for r in rows]
    assert all(r.attempts == 1 for r in rows)
    assert len({r.slurm_id for r in rows}) == 20
    assert all(_kinds(cluster, j).count("slurm_submitted") == 1 and _kinds(cluster, j).count("start") == 1 for j in ids)
    submitted = [line for p in pollers for line in p.text().splitlines() if "submitted attempt" in line]
    assert len(submitted) == 20


def test_slurm_cluster_node_set_down_requeues_with_the_reason_shown(cluster, tmp_path):
    """``scontrol update state=down`` under a running job: Slurm requeues it, the job's events say
    so, and it resumes from its checkpoint once the node is back; never left running unattended."""
    cfg, gate = _gated(tmp_path, "nodefail", gate_step=4)
    (jid,) = _enqueue(cluster, tmp_path, [cfg])
    poller = Poller(tmp_path, cluster, "--once")
    node = _node()
    try:
        _wait(lambda: _at_step(cluster, jid, 4), 180, "the job in its second epoch", poller)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=ctxsim test"], check=True,
                       timeout=60)
        _wait(lambda: any(k == "slurm_state" and "requeued by Slurm" in m for k, m in _events(cluster, jid)), 120,
              "the requeue seen by the poller", poller)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, timeout=60)
        _wait(lambda: _kinds(cluster, jid).count("slurm_start") == 2, 180, "the job running again", poller)
        gate.touch()
        assert poller.wait() == 0, poller.text()
    finally:
        poller.kill()
    _resumed_in_place(cluster, jid)


def test_slurm_cluster_submits_a_sweep_as_one_job_array(cluster, tmp_path):
    """``ctxsim sweep --executor slurm``: the poller submits the sweep's jobs as one Slurm job
    array (ids ``ARRAY_0..2``), and each task trains and settles its own job."""
    db = cluster.url.removeprefix("sqlite:///")
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "sweep", "-d", "synthetic", "-l", "hybrid", "--seeds", "3",
                        "--epochs", "1", "--set", "sampler.num_batches=2", "--set", "device=cpu", "--set", "num_workers=0",
                        "--gpus-per-job", "0", "--executor", "slurm", "--db", db], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    poller = Poller(tmp_path, cluster, "--once")
    assert poller.wait() == 0, poller.text()
    with cluster.Session() as s:
        rows = list(s.scalars(select(Job).order_by(Job.id)))
    assert [(j.status, j.attempts, j.seed) for j in rows] == [("done", 1, 0), ("done", 1, 1), ("done", 1, 2)], \
        [(j.id, j.status, j.error) for j in rows]
    arrays = {j.slurm_id.split("_")[0] for j in rows}
    assert len(arrays) == 1 and sorted(j.slurm_id.split("_")[1] for j in rows) == ["0", "1", "2"], [j.slurm_id for j in rows]
    assert "(job array of 3)" in poller.text()
    assert all(_slurm_state(cluster, j.id).startswith("COMPLETED") for j in rows)


def test_slurm_cluster_two_rank_job_matches_one_process(cluster, tmp_path):
    """A job asking for 2 GPUs gets them from Slurm (name-only GPUs here: .ci/start-slurm.sh) and
    runs its two ranks under torchrun in the Slurm task, on the CPU with gloo; its per-step losses
    equal one process's on the same global batch (rel 1e-5, as tests/test_distributed.py)."""
    from ctxsim.train import recipe

    cfg = recipe("synthetic", "hybrid", 256).with_overrides(
        epochs=1, device="cpu", num_workers=0, seed=0, sampler_kw={"num_batches": 3}, model={"bn_mode": "eval_stats"})
    (jid, _), = jobs.enqueue_many(cluster, [cfg], executor="slurm", n_gpus=2, runs_root=tmp_path / "runs")
    poller = Poller(tmp_path, cluster, "--once", "--gpus-per-node=2")
    assert poller.wait() == 0, poller.text()
    row = _row(cluster, jid)
    assert (row.status, row.attempts, row.n_gpus) == ("done", 1, 2), (row.error, poller.text())
    out = (Path(row.run_dir) / "stdout.log").read_text()
    assert out.count(f"job {jid} attempt 1 pid") == 2, out  # two ranks ran

    local = open_registry(str(tmp_path / "local.db"))
    (lid, _), = jobs.enqueue_many(local, [cfg], runs_root=tmp_path / "local-runs")
    r = subprocess.run([sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--device", "cpu",
                        "--db", str(tmp_path / "local.db")], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0 and _row(local, lid).status == "done", r.stdout + r.stderr

    def losses(reg, j) -> list[float]:
        with reg.Session() as s:
            return [m.value for m in s.scalars(select(Metric).where(Metric.job_id == j, Metric.key == "train/loss")
                                               .order_by(Metric.step))]

    two, one = losses(cluster, jid), losses(local, lid)
    assert len(two) == len(one) == 3 and two == pytest.approx(one, rel=1e-5)
    local.dispose()
