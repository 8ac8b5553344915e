"""The Slurm executor (docs/architecture.md §5.3): queued jobs marked ``executor="slurm"`` are submitted through
submitit, one Slurm job each, by a poller (``ctxsim worker --executor slurm``) on a login node.

Who does what:

* The poller (``SlurmWorker``) claims a job (attempt N), submits a ``SlurmTask`` with the
  partition / time / GPU options, stores the Slurm job id in ``jobs.slurm_id``, heartbeats the job
  while Slurm has it (pending or running), maps the Slurm state back to the registry when it ends,
  and cancels the Slurm job (``job.cancel()``) when a cancel is requested.
* The ``SlurmTask`` runs on the compute node: it records its host and pid on the job, runs
  ``python -m ctxsim.runner.job --job ID --attempt N`` (under torchrun when the job asks for more
  than one GPU), heartbeats the job itself (the job survives a poller restart), stops the job when a
  cancel is requested, and settles its status from the exit code, like the local worker.
* Preemption and time limits: Slurm signals the task (USR2, ``signal_delay_s`` before the limit);
  submitit calls ``SlurmTask.checkpoint``, which stops the training process gracefully (it writes
  its checkpoint) and hands submitit the same task to requeue: the requeued Slurm job resumes the
  same attempt from the checkpoint. A task that ended without settling the job (node failure, an
  OOM kill, a final TIMEOUT/PREEMPTED) is put back in the queue by the poller and resumes from its
  last checkpoint on a new submission (NODE_FAIL/PREEMPTED/TIMEOUT do not count as an attempt).

The registry URL never goes into submitit's pickles with its password: a URL without one travels and
is used as is; one with a password is left out, and the task reads ``$CTXSIM_DB`` (Slurm exports the
submitter's environment) or authenticates through ``~/.pgpass``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from ctxsim.errors import ConfigError, one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import Registry, open_registry
from ctxsim.registry.models import EventKind
from ctxsim.registry.states import Executor, JobStatus
from ctxsim.runner.job import EXIT_DONE, EXIT_FAILED, EXIT_NOT_OWNED
from ctxsim.runner.skeleton import WorkerLoop, killpg
from ctxsim.runner.slurm_states import GONE, SlurmQueryError, killed_by_warning_signal, query_states
from ctxsim.runner.torchrun import torchrun_argv

log = logging.getLogger(__name__)

EXECUTOR = Executor.SLURM

# Slurm job states (sacct/squeue) -> what the poller does with them
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                 "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "UNKNOWN",
                 "READY", "SUBMITTED"}
ENDED_OK = {"COMPLETED", "FINISHED"}  # FINISHED: submitit's local executor
CRASHED = {"FAILED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "INTERRUPTED"}  # counts as an attempt
NOT_OUR_FAULT = {"NODE_FAIL", "PREEMPTED", "TIMEOUT"}  # re-queued without counting an attempt
CANCELLED = {"CANCELLED", "REVOKED"}
ENDED_UNKNOWN = {GONE}  # neither squeue nor sacct knows it: ended, how is lost (counts as an attempt)


def state_action(state: str) -> str:
    """Maps a Slurm (or submitit local) job state to an action: active, ended, crashed, requeue or
    cancelled. Slurm decorates some states ("CANCELLED by 1234"); unknown states count as active."""
    s = (state or "UNKNOWN").split()[0].upper().rstrip("+")
    if s in ENDED_OK:
        return "ended"
    if s in CRASHED or s in ENDED_UNKNOWN:
        return "crashed"
    if s in NOT_OUR_FAULT:
        return "requeue"
    if s in CANCELLED:
        return JobStatus.CANCELLED
    return "active"


# ---------------------------------------------------------------- options


SIGNAL_EARLY_S = 60  # sbatch --signal: "the signal may be sent up to 60 seconds earlier than specified"


@dataclass
class SlurmOptions:
    """What each Slurm job asks for. ``from_file`` reads the same keys from TOML or JSON."""

    partition: Optional[str] = None
    time_min: int = 24 * 60
    gpus_per_node: int = 8  # the most GPUs a job may ask for (jobs needing more stay queued)
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[int] = None
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # requeues on time limit before submitit gives up
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {"mail-type": "END"}
    folder: Optional[str] = None  # submitit's logs and pickles (default: <runs root>/slurm); shared filesystem
    cluster: Optional[str] = None  # None: auto (slurm where sbatch exists); "local": submitit's LocalExecutor

    def validate(self) -> "SlurmOptions":
        if self.time_min <= 0:
            raise ConfigError(f"--time must be > 0 minutes, got {self.time_min}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.cluster not in (None, "slurm", "local", "debug"):
            raise ConfigError(f"slurm cluster must be slurm, local or debug, got {self.cluster!r}")
        if self.signal_delay_s < 0 or self.max_num_timeout < 0:
            raise ConfigError("signal_delay_s and max_num_timeout must be >= 0")
        if self.cluster in (None, "slurm") and self.signal_delay_s + SIGNAL_EARLY_S >= self.time_min * 60:
            # the job could get USR2 as it starts, every time it is requeued, until max_num_timeout runs out
            raise ConfigError(f"signal_delay_s ({self.signal_delay_s}) plus the {SIGNAL_EARLY_S} s Slurm may send "
                              f"the signal early must be below the time limit ({self.time_min} min): "
                              "raise --time or lower signal_delay_s")
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "SlurmOptions":
        """Options from a TOML/JSON file (keys: the fields of this class; ``time`` = ``time_min``),
        then the non-None ``overrides`` (command-line options win)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"--slurm-config {p}: {e.strerror or e}") from None
        try:
            if p.suffix == ".json":
                d = json.loads(text)
            else:
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    raise ConfigError(f"--slurm-config {p}: TOML needs Python 3.11 or later; "
                                      "write the options as a .json file") from None
                d = tomllib.loads(text)
                d = d.get("slurm", d)
        except (ValueError, json.JSONDecodeError) as e:
            raise ConfigError(f"--slurm-config {p}: {one_line(e)}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"--slurm-config {p}: expected a table of options")
        d = {k.replace("-", "_"): v for k, v in d.items()}
        if "time" in d:
            d["time_min"] = d.pop("time")
        return cls.from_dict({**d, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SlurmOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in d if k not in names]
        if bad:
            raise ConfigError(f"unknown slurm option {bad[0]!r} (known: {', '.join(sorted(names))})")
        try:
            return cls(**d).validate()
        except TypeError as e:
            raise ConfigError(f"slurm options: {e}") from None

    def executor_parameters(self, n_gpus: int, name: str) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` keywords of a job needing ``n_gpus`` GPUs."""
        p: dict[str, Any] = {"timeout_min": int(self.time_min), "name": name, "nodes": 1, "tasks_per_node": 1,
                             "gpus_per_node": int(n_gpus)}
        if self.cpus_per_task:
            p["cpus_per_task"] = int(self.cpus_per_task)
        if self.mem_gb:
            p["mem_gb"] = int(self.mem_gb)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                p[f"slurm_{key}"] = getattr(self, key)
        p["slurm_signal_delay_s"] = int(self.signal_delay_s)
        if self.additional:
            p["slurm_additional_parameters"] = dict(self.additional)
        return p


def url_for_nodes(url: str) -> Optional[str]:
    """The registry URL the compute nodes get in submitit's pickle: without its password (None when
    it had one: the task then uses ``$CTXSIM_DB`` or ``~/.pgpass``)."""
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    if u.password:
        bare = URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database,
                          query=u.query)
        return bare.render_as_string(hide_password=False)
    return url


# ---------------------------------------------------------------- the compute-node side


class SlurmTask:
    """What submitit runs on the compute node for one claim (job id + attempt) of a registry job."""

    def __init__(self, db_url: Optional[str], job_id: int, attempt: int, worker_id: str, device: str = "auto",
                 n_gpus: int = 0, heartbeat_s: float = 5.0, grace_s: float = 60.0) -> None:
        self.db_url, self.job_id, self.attempt, self.worker_id = db_url, job_id, attempt, worker_id
        self.device, self.n_gpus, self.heartbeat_s, self.grace_s = device, n_gpus, heartbeat_s, grace_s
        self._proc: Optional[subprocess.Popen] = None
        self._preempted = False
        self._terminated = False  # Slurm sent SIGTERM: scancel, scontrol requeue, a node going down

    def __getstate__(self) -> dict[str, Any]:  # submitit pickles the task: no live process inside
        d = dict(self.__dict__)
        d["_proc"], d["_preempted"], d["_terminated"] = None, False, False
        return d

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """Slurm ends the allocation (scancel, ``scontrol requeue``, a node set down, preemption
        without USR2): the job stops at its next step, keeping its checkpoint, and the poller decides
        from Slurm's final state (cancelled, or requeued)."""
        self._terminated = True
        if self._proc is not None and self._proc.poll() is None:
            killpg(self._proc.pid, signal.SIGTERM)

    def _registry(self) -> Registry:
        # the worker's own URL when it could travel (no password); else the node's $CTXSIM_DB
        url = self.db_url or os.environ.get("CTXSIM_DB")
        return open_registry(url, create=False)

    def __call__(self) -> int:
        # submitit ignores SIGTERM in the task ("bypass"); this task acts on it (see _on_sigterm)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        reg = self._registry()
        fence = dict(attempt=self.attempt, worker_id=self.worker_id)
        run_dir = self._start(reg)
        if run_dir is None:
            return EXIT_NOT_OWNED  # no longer ours (reaped, cancelled while pending, removed)
        reason = self._supervise(reg)
        rc = self._proc.returncode
        if self._preempted:
            return rc  # submitit requeues this task; the job stays running under the same attempt
        how = f"exit code {rc}" if rc >= 0 else f"killed by signal {-rc}"
        if reason == "lost" or (self._terminated and reason is None):
            reg.dispose()
            return rc  # lost: another claim has it; terminated: the poller reads Slurm's verdict
        if reason == "cancel":
            jobs.finish(reg, self.job_id, JobStatus.CANCELLED, exit_code=rc, error=f"cancelled by request ({how})", **fence)
        elif rc == EXIT_DONE:
            jobs.finish(reg, self.job_id, JobStatus.DONE, exit_code=rc, **fence)  # no-op: the job marked itself
        elif rc == EXIT_FAILED:
            jobs.finish(reg, self.job_id, JobStatus.FAILED, exit_code=rc, error=f"job process failed ({how})", **fence)
        else:  # stopped without a request, or crashed (OOM killer, segfault): resume from the checkpoint
            jobs.requeue(reg, self.job_id, f"job process ended on {socket.gethostname()} ({how})", **fence)
        reg.dispose()
        return rc

    def _start(self, reg: Registry) -> Optional[str]:
        host, pid = socket.gethostname(), os.getpid()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)  # requeued by Slurm this many times
        again = f", Slurm restart {restarts}" if restarts else ""
        run_dir = jobs.mark_started(reg, self.job_id, self.attempt, self.worker_id, host, pid, EventKind.SLURM_START,
                                    f"attempt {self.attempt} on {host} pid {pid} (slurm {_slurm_job_id()}{again})")
        if run_dir is None:
            return None
        try:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "stdout.log").open("ab").close()
        except OSError as e:  # the job cannot run anywhere like this: failed, not requeued
            jobs.finish(reg, self.job_id, JobStatus.FAILED, attempt=self.attempt, worker_id=self.worker_id,
                        error=f"cannot create the run folder {run_dir}: {e.strerror or e}")
            return None
        args = ["--job", str(self.job_id), "--attempt", str(self.attempt), "--device", self.device]
        argv = (torchrun_argv(self.n_gpus, "ctxsim.runner.job", args) if self.n_gpus > 1
                else [sys.executable, "-m", "ctxsim.runner.job", *args])
        env = dict(os.environ, CTXSIM_DB=reg.url, CTXSIM_WORKER_PID=str(pid), PYTHONUNBUFFERED="1")
        with open(Path(run_dir) / "stdout.log", "ab") as fh:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            fh.write(f"=== ctxsim job {self.job_id} attempt {self.attempt} on slurm {_slurm_job_id()} "
                     f"host {host} at {stamp} ===\n".encode())
            fh.flush()
            self._proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
        return run_dir

    def _supervise(self, reg: Registry) -> Optional[str]:
        """Heartbeats the job until its process ends; stops it on a cancel request. The reason it
        was stopped ("cancel" | "lost") or None."""
        reason: Optional[str] = None
        kill_at: Optional[float] = None
        next_beat = 0.0
        while self._proc.poll() is None:
            now = time.monotonic()
            if now >= next_beat and not self._preempted:
                next_beat = now + self.heartbeat_s
                try:
                    owned = jobs.heartbeat_jobs(reg, self.worker_id, [self.job_id])
                except Exception as e:  # registry hiccup: the job keeps running
                    log.warning("heartbeat of job %d failed: %s", self.job_id, e)
                    owned = None
                if owned is not None and reason is None:
                    if self.job_id not in owned:
                        reason, kill_at = "lost", now
                        killpg(self._proc.pid, signal.SIGKILL)
                    elif owned[self.job_id]:
                        reason, kill_at = "cancel", now + self.grace_s
                        killpg(self._proc.pid, signal.SIGTERM)
            if kill_at is not None and now >= kill_at:
                killpg(self._proc.pid, signal.SIGKILL)
                kill_at = None
            time.sleep(0.1)
        killpg(self._proc.pid, signal.SIGKILL)  # nothing of the job's group may linger
        return reason

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's preemption/timeout hook: stop the training process (it writes its checkpoint),
        then requeue this task in place; the same attempt resumes from the checkpoint."""
        import submitit

        self._preempted = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            reg = self._registry()
            try:
                jobs.add_event(reg, self.job_id, EventKind.SLURM_REQUEUE,
                               f"preempted or timed out on {socket.gethostname()}: requeued from its checkpoint")
            finally:
                reg.dispose()
        except Exception as e:  # the requeue matters more than the log line
            log.warning("could not record the requeue of job %d: %s", self.job_id, e)
        return submitit.helpers.DelayedSubmission(
            SlurmTask(self.db_url, self.job_id, self.attempt, self.worker_id, self.device, self.n_gpus,
                      self.heartbeat_s, self.grace_s))


def _slurm_job_id() -> str:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "?"


# ---------------------------------------------------------------- the poller (login node)


@dataclass
class _Submitted:
    """A Slurm job this poller follows: one it submitted, or one whose poller stopped (``adopted``:
    the claim, and so the fence, stays that poller's; this one heartbeats and settles it)."""

    job_id: int
    attempt: int
    worker_id: str  # the claim's owner (the fence)
    slurm_id: str
    sjob: Any = None  # submitit Job (None for an adopted one)
    adopted: bool = False
    cancel_at: Optional[float] = None  # when a requested cancel escalates to scancel
    cancelled: bool = False
    last_state: str = ""


class SlurmWorker(WorkerLoop):
    """Submits queued slurm jobs through submitit and follows them (``ctxsim worker --executor slurm``),
    through the shared loop of ``ctxsim.runner.skeleton`` (its hooks: submit, follow the Slurm state).

    Cancel: the compute-node task sees the request at its next heartbeat (``task_heartbeat_s``),
    SIGTERMs the job's process group and SIGKILLs it after the task's ``grace_s``; should the task
    not settle it, this poller ``scancel``s the Slurm job ``grace_s + 2 * task_heartbeat_s`` after it
    first saw the request (checked every ``poll_s``). A pending Slurm job is cancelled at once.
    """

    executor = EXECUTOR

    def __init__(self, reg: Registry, options: SlurmOptions, max_parallel: int = 64, poll_s: float = 10.0,
                 heartbeat_expiry_s: float = 300.0, grace_s: float = 60.0, once: bool = False,
                 max_jobs: Optional[int] = None, device: str = "auto", host_name: Optional[str] = None,
                 worker_id: Optional[str] = None, task_heartbeat_s: Optional[float] = None,
                 on_message: Optional[Callable[[str], None]] = None) -> None:
        host = host_name or socket.gethostname()
        super().__init__(reg, worker_id or f"slurm:{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}", host, poll_s,
                         heartbeat_expiry_s, heartbeat_s=poll_s, reap_every_s=min(heartbeat_expiry_s / 2, 30.0),
                         once=once, max_jobs=max_jobs, max_parallel=max_parallel, on_message=on_message)
        self.options = options.validate()
        self.grace_s, self.device = grace_s, device
        self.task_heartbeat_s = task_heartbeat_s or max(1.0, min(30.0, heartbeat_expiry_s / 6))
        self.active: dict[int, _Submitted] = {}
        self._claimed: list[jobs.ClaimedJob] = []  # claimed in this fill pass, submitted by launched()
        self.folder = Path(options.folder) if options.folder else jobs.default_runs_root(reg) / "slurm"
        # a real cluster: states from one squeue call per poll (submitit reads sacct only, which
        # answers nothing with accounting off); submitit's local executor: its own job states
        self.real_slurm = options.cluster == "slurm" or (options.cluster is None and shutil.which("sbatch") is not None)
        self.adopt_after_s = max(3 * poll_s, heartbeat_expiry_s / 2)  # a poller this silent is gone

    def request_stop(self, *_args: object) -> None:
        """Stop submitting and exit; submitted Slurm jobs keep running and heartbeat themselves."""
        self._stopping.set()

    # ------------------------------------------------------------ hooks of the shared loop

    def banner(self) -> str:
        return (f"slurm worker {self.id}: submitting through submitit "
                f"({self.options.cluster or 'auto'}; logs in {self.folder})")

    def busy(self) -> int:
        return len(self.active) + len(self._claimed)

    def free_gpus(self) -> list[str]:
        return [str(i) for i in range(self.options.gpus_per_node)]

    def launch(self, job: jobs.ClaimedJob) -> None:
        self._claimed.append(job)  # submitted by launched(), with the rest of this pass's claims

    def launched(self) -> None:
        """Submits this pass's claims: on a Slurm cluster the jobs that ask for the same resources
        go as one job array (a sweep is one array); one at a time through submitit's local executor."""
        claimed, self._claimed = self._claimed, []
        if not self.real_slurm:
            for job in claimed:
                self._submit([job])
            return
        groups: dict[int, list[jobs.ClaimedJob]] = {}
        for job in claimed:
            groups.setdefault(job.n_gpus, []).append(job)
        for group in groups.values():
            self._submit(group)

    def collect(self) -> None:
        self._follow()

    def _executor(self, job: jobs.ClaimedJob, name: str):
        import submitit

        ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.options.cluster,
                                   slurm_max_num_timeout=self.options.max_num_timeout)
        params = self.options.executor_parameters(job.n_gpus, name)
        if ex.cluster != "slurm":  # the local executor knows none of the slurm_* keys
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        ex.update_parameters(**params)
        return ex

    def _submit(self, group: list[jobs.ClaimedJob]) -> None:
        """One Slurm job, or one job array for several claims needing the same resources."""
        tasks = [SlurmTask(url_for_nodes(self.reg.url), job.id, job.attempt, self.id, self.device, job.n_gpus,
                           self.task_heartbeat_s, self.grace_s) for job in group]
        name = f"ctxsim-{group[0].id}" if len(group) == 1 else f"ctxsim-{group[0].id}-{group[-1].id}"
        try:
            ex = self._executor(group[0], name)
            if len(group) == 1:
                sjobs = [ex.submit(tasks[0])]
            else:
                with ex.batch():
                    pending = [ex.submit(t) for t in tasks]
                sjobs = list(pending)
        except Exception as e:  # sbatch refused (bad partition, account...): the jobs cannot run like this
            msg = f"slurm submission failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
            for job in group:
                jobs.finish(self.reg, job.id, JobStatus.FAILED, error=msg, attempt=job.attempt, worker_id=self.id)
                self.say(f"job {job.id}: {msg}")
            return
        array = f" (job array of {len(group)})" if len(group) > 1 else ""
        for job, sjob in zip(group, sjobs):
            sid = str(sjob.job_id)
            jobs.set_slurm_id(self.reg, job.id, job.attempt, sid)
            self.active[job.id] = _Submitted(job.id, job.attempt, self.id, sid, sjob)
            self.started_jobs += 1
            self.say(f"job {job.id}: submitted attempt {job.attempt} as slurm job {sid}{array}")

    def _adopt(self) -> None:
        """Follows the Slurm jobs of pollers that stopped heartbeating (killed, restarted): their
        tasks may still run; without a follower a pending one would be reaped and submitted twice."""
        for o in jobs.orphaned_slurm_jobs(self.reg, self.adopt_after_s, self.id):
            if o.id not in self.active:
                self.active[o.id] = _Submitted(o.id, o.attempt, o.worker_id, o.slurm_id, adopted=True)
                self.say(f"job {o.id}: following slurm job {o.slurm_id} of {o.worker_id} (that poller is silent)")

    def _states(self) -> dict[int, str]:
        """The Slurm state of every followed job: one squeue (and at most one sacct) call per poll."""
        if not self.real_slurm:
            return {jid: _state(sub.sjob) if sub.sjob is not None else "UNKNOWN" for jid, sub in self.active.items()}
        try:
            by_sid = query_states([sub.slurm_id for sub in self.active.values()])
        except (SlurmQueryError, OSError, subprocess.SubprocessError) as e:
            self.say(f"slurm states unknown this poll: {one_line(e)}")
            return {jid: "UNKNOWN" for jid in self.active}
        return {jid: by_sid.get(sub.slurm_id, "UNKNOWN") for jid, sub in self.active.items()}

    def _follow(self) -> None:
        self._adopt()
        if not self.active:
            return
        owned: dict[int, bool] = {}
        by_owner: dict[str, list[int]] = {}
        for jid, sub in self.active.items():
            by_owner.setdefault(sub.worker_id, []).append(jid)
        for owner, ids in by_owner.items():
            owned.update(jobs.heartbeat_jobs(self.reg, owner, ids))
        states = self._states()
        now = time.monotonic()
        for jid, sub in list(self.active.items()):
            state = states.get(jid, "UNKNOWN")
            action = state_action(state)
            self._note_state(sub, state)
            if jid not in owned:  # ended (the task settled it), reaped or removed
                if action == "active" and not sub.cancelled:
                    st = jobs.job_states(self.reg, [jid]).get(jid)
                    if st is None or st[2] != sub.attempt or st[0] == JobStatus.QUEUED:
                        self.say(f"job {jid}: no longer ours: cancelling slurm job {sub.slurm_id}")
                        self._cancel(sub)
                if action != "active" or sub.cancelled:
                    self._done(jid, sub, state)
                continue
            if owned[jid] and not sub.cancelled:  # cancel requested
                if state.upper().startswith("PENDING") or sub.cancel_at is not None and now >= sub.cancel_at:
                    self._cancel(sub)
                elif sub.cancel_at is None:  # running: the task stops the job gracefully, else we cancel
                    sub.cancel_at = now + self.grace_s + 2 * self.task_heartbeat_s
            if action == "active":
                continue
            # Slurm says it is over but the job is still running under its claim: the task did not settle it
            fence = dict(attempt=sub.attempt, worker_id=sub.worker_id)
            if sub.cancelled or owned[jid]:
                word = jobs.requeue(self.reg, jid, f"slurm job {sub.slurm_id} {state}", **fence)  # -> cancelled
            elif action == "requeue":
                word = jobs.requeue(self.reg, jid, f"slurm job {sub.slurm_id} {state}", refund_attempt=True, **fence)
            elif action == JobStatus.CANCELLED:
                word = JobStatus.CANCELLED if jobs.finish(self.reg, jid, JobStatus.CANCELLED,
                                                  error=f"slurm job {sub.slurm_id} cancelled outside ctxsim ({state})",
                                                  **fence) else ""
            elif self.real_slurm and state.startswith("FAILED") and killed_by_warning_signal(sub.slurm_id):
                # Slurm's USR2 reached a (requeued) job before its handler: Slurm's doing, not the job's
                word = jobs.requeue(self.reg, jid, f"slurm job {sub.slurm_id} killed by Slurm's warning signal "
                                    "(USR2) before it could checkpoint", refund_attempt=True, **fence)
            else:  # crashed or ended without a word: resume from the checkpoint (counts as an attempt)
                word = jobs.requeue(self.reg, jid, f"slurm job {sub.slurm_id} ended {state}", **fence)
            self.say(f"job {jid}: slurm {state} -> {word or 'not ours'}")
            self._done(jid, sub, state, word)

    def _note_state(self, sub: _Submitted, state: str) -> None:
        """A job event each time the Slurm state changes (with Slurm's reason), so that a job held
        pending after a node failure or a requeue says why in ``ctxsim show`` and the dashboard."""
        if state == sub.last_state or state.startswith(("UNKNOWN", "COMPLETING")):
            return
        before, sub.last_state = sub.last_state, state
        if before or not state.startswith(("PENDING", "RUNNING")):
            try:
                back = " requeued by Slurm:" if before.startswith("RUNNING") and state.startswith("PENDING") else ""
                jobs.add_event(self.reg, sub.job_id, EventKind.SLURM_STATE,
                               f"slurm job {sub.slurm_id}{back} {before or 'submitted'} -> {state}")
            except Exception as e:  # noqa: BLE001 - a log line; the state itself is handled by _follow
                log.warning("could not record the slurm state of job %d: %s", sub.job_id, e)

    def _cancel(self, sub: _Submitted) -> None:
        sub.cancelled = True
        if sub.sjob is not None:
            _cancel(sub.sjob)
            return
        try:  # an adopted job: no submitit handle, the id is enough
            subprocess.run(["scancel", sub.slurm_id], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("scancel %s failed: %s", sub.slurm_id, e)

    def _done(self, jid: int, sub: _Submitted, state: str, word: Optional[str] = None) -> None:
        del self.active[jid]
        if word is None:
            st = jobs.job_states(self.reg, [jid]).get(jid)
            word = st[0] if st else "removed"
        self.results[jid] = word
        self.say(f"job {jid}: slurm job {sub.slurm_id} {state}: {word}")


def _state(sjob: Any) -> str:
    try:
        return str(sjob.state)
    except Exception as e:  # sacct hiccup: ask again next poll
        log.warning("state of slurm job %s: %s", getattr(sjob, "job_id", "?"), e)
        return "UNKNOWN"


def _cancel(sjob: Any) -> None:
    try:
        sjob.cancel(check=False)
    except Exception as e:
        log.warning("cancel of slurm job %s failed: %s", getattr(sjob, "job_id", "?"), e)
