"""The worker daemon: claims jobs, runs each in its own process group, heartbeats, cancels, reaps.

One worker owns a machine's GPUs (docs/architecture.md §5.1) and runs up to ``max_parallel`` jobs at once, each
with CUDA_VISIBLE_DEVICES set to the GPU ids it assigned (none: CPU). Jobs of a dead worker are
re-queued by whichever worker's reaper sees their heartbeat expire, and resume from their
checkpoint. SIGTERM/SIGINT: stop the children gracefully, re-queue their jobs, exit.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ctxsim.registry import jobs
from ctxsim.registry.db import Registry
from ctxsim.registry.states import JobStatus
from ctxsim.runner.gpus import GpuPool
from ctxsim.runner.job import EXIT_DONE, EXIT_FAILED, EXIT_STOPPED
from ctxsim.runner.skeleton import WorkerLoop, killpg
from ctxsim.runner.torchrun import torchrun_argv

log = logging.getLogger(__name__)


@dataclass
class _Child:
    job: jobs.ClaimedJob
    proc: subprocess.Popen
    log_fh: object
    started: float = field(default_factory=time.monotonic)
    stop_reason: Optional[str] = None  # "cancel" | "shutdown" | "lost"
    kill_at: Optional[float] = None


class LocalWorker(WorkerLoop):
    """Runs queued jobs from ``reg`` as local subprocesses (``ctxsim worker``), through the shared
    loop of ``ctxsim.runner.skeleton`` (its hooks: one process group per job).

    How long a running job may take to honour ``ctxsim cancel`` (``cancel_bound_s``): the worker
    sees the request at its next heartbeat (every ``heartbeat_s``) and SIGTERMs the job's process
    group; the job checks its stop flag between steps (``should_stop``: every training step, every
    probe step) and exits with a checkpoint; a job that has not exited ``grace_s`` later (blocked
    in a long step, a data loader, I/O) is SIGKILLed on the next pass of the loop (at most
    ``min(poll_s, heartbeat_s)`` later). So a cancel is honoured within
    ``heartbeat_s + grace_s + min(poll_s, heartbeat_s)`` seconds (plus a registry round trip).
    """

    executor = "local"

    def __init__(
        self, reg: Registry, gpus: list[str], max_parallel: Optional[int] = None, poll_s: float = 1.0,
        heartbeat_expiry_s: float = 60.0, grace_s: float = 10.0, once: bool = False,
        max_jobs: Optional[int] = None, executor: str = "local", device: str = "auto",
        worker_id: Optional[str] = None, on_message: Optional[Callable[[str], None]] = None,
        host_name: Optional[str] = None,
    ) -> None:
        host = host_name or socket.gethostname()  # recorded on the jobs it claims (shared registry)
        super().__init__(
            reg, worker_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}", host, poll_s, heartbeat_expiry_s,
            heartbeat_s=max(0.05, min(poll_s, heartbeat_expiry_s / 4)), reap_every_s=min(heartbeat_expiry_s / 2, 10.0),
            once=once, max_jobs=max_jobs, max_parallel=max_parallel or max(1, len(gpus)), on_message=on_message)
        self.pool = GpuPool(gpus)
        self.grace_s = grace_s
        self.executor = executor
        self.device = device
        self.children: dict[int, _Child] = {}

    @property
    def cancel_bound_s(self) -> float:
        """The most seconds between ``ctxsim cancel`` and the job's process group being gone
        (see the class docstring), registry latency aside."""
        return self.heartbeat_s + self.grace_s + min(self.poll_s, self.heartbeat_s)

    # ------------------------------------------------------------ hooks of the shared loop

    def gpus(self) -> list[str]:
        return self.pool.all

    def banner(self) -> str:
        return (f"worker {self.id}: GPUs [{','.join(self.pool.all) or 'none: CPU jobs'}], "
                f"{self.max_parallel} slot(s), executor {self.executor}")

    def busy(self) -> int:
        return len(self.children)

    def free_gpus(self) -> list[str]:
        return self.pool.free

    def launch(self, job: jobs.ClaimedJob) -> None:
        self._start(job)

    def collect(self) -> None:
        self._collect()

    def heartbeat(self) -> None:
        self._heartbeat()

    def enforce(self) -> None:
        self._enforce_kills()

    def drained(self) -> bool:
        # a job running elsewhere that we could run may still come back (its worker dies, its
        # heartbeat expires, the reaper re-queues it)
        return not jobs.count_running(self.reg, len(self.pool.all), (self.executor,))

    def idle_wait_s(self) -> float:
        return self.poll_s if not self.children else min(self.poll_s, self.heartbeat_s)

    def shutdown(self) -> None:
        self._shutdown()

    def _start(self, job: jobs.ClaimedJob) -> None:
        self.pool.take(job.id, job.gpus)
        run_dir = Path(job.run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fh = open(run_dir / "stdout.log", "ab")
        except OSError as e:  # not writable, a name too long, a file in the way: the job's fault, not ours
            self.pool.release(job.id)
            msg = f"cannot create the run folder {run_dir}: {e.strerror or e}"
            jobs.finish(self.reg, job.id, JobStatus.FAILED, attempt=job.attempt, worker_id=self.id, error=msg)
            self.say(f"job {job.id}: failed: {msg}")
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        fh.write(f"=== ctxsim job {job.id} attempt {job.attempt} on {self.id} at {stamp} ===\n".encode())
        fh.flush()
        env = dict(os.environ)
        env.update(CUDA_VISIBLE_DEVICES=",".join(job.gpus), CTXSIM_DB=self.reg.url,
                   CTXSIM_WORKER_PID=str(os.getpid()), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "ctxsim.runner.job", "--job", str(job.id), "--attempt", str(job.attempt),
                "--device", self.device]
        if job.n_gpus > 1:  # DDP: one process per claimed GPU under torchrun (docs/architecture.md §5.2)
            argv = torchrun_argv(job.n_gpus, "ctxsim.runner.job", argv[3:])
        try:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as e:
            fh.close()
            self.pool.release(job.id)
            jobs.finish(self.reg, job.id, JobStatus.FAILED, attempt=job.attempt, worker_id=self.id,
                        error=f"could not start the job process: {e}")
            return
        self.children[job.id] = _Child(job, proc, fh)
        self.started_jobs += 1
        self.say(f"job {job.id}: started attempt {job.attempt} (pid {proc.pid}"
                 + (f", GPUs {','.join(job.gpus)})" if job.gpus else ", CPU)"))

    def _heartbeat(self) -> None:
        try:
            jobs.worker_heartbeat(self.reg, self.id)
            owned = jobs.heartbeat_jobs(self.reg, self.id, list(self.children))
        except Exception as e:  # the registry is briefly unreachable: keep the children running
            log.warning("heartbeat failed: %s", e)
            return
        missing = [j for j, c in self.children.items() if j not in owned and not c.stop_reason]
        try:
            states = jobs.job_states(self.reg, missing) if missing else {}
        except Exception as e:
            log.warning("job state check failed: %s", e)
            return
        for jid, child in list(self.children.items()):
            if child.stop_reason:
                continue
            if jid not in owned:
                st = states.get(jid)
                if st and st[0] in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED) and st[1] == self.id and st[2] == child.job.attempt:
                    # it ended itself and is exiting: give it the grace period, then clean up
                    if child.kill_at is None:
                        child.kill_at = time.monotonic() + self.grace_s
                    continue
                self.say(f"job {jid}: no longer ours (reaped or removed): stopping it")
                self._terminate(child, "lost", grace=0.0)
            elif owned[jid]:
                self.say(f"job {jid}: cancel requested: stopping its process group")
                self._terminate(child, "cancel", grace=self.grace_s)

    def _terminate(self, child: _Child, reason: str, grace: float) -> None:
        """The cancel / shutdown path: SIGTERM to the job's process group (the job stops at its next
        step check), SIGKILL by ``_enforce_kills`` once ``grace`` has passed (``grace=0``: SIGKILL
        now). See ``cancel_bound_s`` for the bound this gives on honouring a cancel."""
        child.stop_reason = reason
        sig = signal.SIGTERM if grace > 0 else signal.SIGKILL
        killpg(child.proc.pid, sig)
        child.kill_at = time.monotonic() + grace

    def _enforce_kills(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at and child.proc.poll() is None:
                killpg(child.proc.pid, signal.SIGKILL)
                child.kill_at = None

    def _collect(self) -> None:
        for jid, child in list(self.children.items()):
            rc = child.proc.poll()
            if rc is None:
                continue
            # the job's own process is gone: make sure nothing it started lingers in its group
            killpg(child.proc.pid, signal.SIGKILL)
            del self.children[jid]
            self.pool.release(jid)
            child.log_fh.close()
            self.results[jid] = self._settle(child, rc)

    def _settle(self, child: _Child, rc: int) -> str:
        job, fence = child.job, dict(attempt=child.job.attempt, worker_id=self.id)
        how = f"exit code {rc}" if rc >= 0 else f"killed by signal {-rc}"
        if child.stop_reason == "lost":
            word = "lost"
        elif child.stop_reason == "cancel":
            jobs.finish(self.reg, job.id, JobStatus.CANCELLED, exit_code=rc, error=f"cancelled by request ({how})", **fence)
            word = JobStatus.CANCELLED
        elif child.stop_reason == "shutdown":
            word = jobs.requeue(self.reg, job.id, "worker shut down", refund_attempt=True, **fence) or "lost"
        elif rc == EXIT_DONE:
            jobs.finish(self.reg, job.id, JobStatus.DONE, exit_code=rc, **fence)  # no-op if the job marked itself
            word = JobStatus.DONE
        elif rc == EXIT_FAILED:
            jobs.finish(self.reg, job.id, JobStatus.FAILED, exit_code=rc, error=f"job process failed ({how})", **fence)
            word = JobStatus.FAILED
        elif rc == EXIT_STOPPED:
            word = jobs.requeue(self.reg, job.id, "job process stopped without a request", **fence) or "lost"
        else:  # crashed: killed by the OOM killer, a segfault...: counts as an attempt
            word = jobs.requeue(self.reg, job.id, f"job process died ({how})", **fence) or "lost"
        self.say(f"job {job.id}: {word} ({how}, {time.monotonic() - child.started:.1f} s)")
        return word

    def _shutdown(self) -> None:
        if self.children:
            self.say(f"stopping {len(self.children)} job(s) and re-queueing them")
        for child in self.children.values():
            if child.stop_reason is None:
                self._terminate(child, "shutdown", grace=self.grace_s)
        deadline = time.monotonic() + self.grace_s + 5
        while self.children and time.monotonic() < deadline:
            self._enforce_kills()
            self._collect()
            time.sleep(0.05)
        for jid, child in list(self.children.items()):  # unkillable (D state): leave it to the reaper
            log.error("job %d (pid %d) did not exit", jid, child.proc.pid)

