"""The one worker loop (reap, collect, heartbeat, fill, stop) shared by the local worker
(``ctxsim.runner.worker.LocalWorker``: job subprocesses on this machine) and the Slurm poller
(``ctxsim.runner.slurm.SlurmWorker``: one Slurm job each), which differ only in their hooks.

One pass of the loop, every ``poll_s`` (sooner while jobs run and heartbeats are due):

1. reap: jobs of any worker whose heartbeat expired go back to the queue (or fail);
2. collect: settle the jobs of this worker that ended (``collect`` hook);
3. heartbeat: this worker's row and its running jobs, acting on cancel requests (``heartbeat``);
4. enforce: escalate stops whose grace period ran out (``enforce``: SIGKILL);
5. fill: claim queued jobs while a slot is free and launch each (``launch``).

A registry error (``DBAPIError``: the database restarting or unreachable) never kills the
worker nor its running jobs: the pass is abandoned and retried after an exponential backoff
(``poll_s`` * 2^n, at most ``MAX_BACKOFF_S``), the same for every executor. SIGTERM / SIGINT
(``request_stop``) end the loop; ``shutdown`` then does what the executor needs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Optional, Sequence

from sqlalchemy.exc import DBAPIError

from ctxsim.errors import one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import Registry

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def killpg(pid: int, sig: int) -> None:
    """Signals the process group led by ``pid`` (a job started with ``start_new_session``); a group
    that is already gone is not an error."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def backoff_s(poll_s: float, failures: int) -> float:
    """Seconds to wait after ``failures`` registry errors in a row."""
    return min(MAX_BACKOFF_S, poll_s * 2 ** min(failures, 5))


class WorkerLoop:
    """The shared loop; subclasses set ``executor`` and implement the hooks below."""

    executor: str = "local"

    def __init__(self, reg: Registry, worker_id: str, host: str, poll_s: float, heartbeat_expiry_s: float,
                 heartbeat_s: float, reap_every_s: float, once: bool, max_jobs: Optional[int],
                 max_parallel: int, on_message: Optional[Callable[[str], None]]) -> None:
        self.reg, self.id, self.host = reg, worker_id, host
        self.poll_s, self.expiry_s = poll_s, heartbeat_expiry_s
        self.heartbeat_s, self.reap_every_s = heartbeat_s, reap_every_s
        self.once, self.max_jobs, self.max_parallel = once, max_jobs, max_parallel
        self.say = on_message or (lambda m: log.info("%s", m))
        self.started_jobs = 0
        self.results: dict[int, str] = {}  # job id -> final word of this worker on it
        self._stopping = threading.Event()

    # ------------------------------------------------------------ hooks

    def gpus(self) -> list[str]:
        """The GPU ids this worker registers."""
        return []

    def banner(self) -> str:
        return f"worker {self.id}"

    def busy(self) -> int:
        """How many of this worker's jobs are running (launched and not yet settled)."""
        raise NotImplementedError

    def free_gpus(self) -> Sequence[str]:
        """The GPU ids a job claimed now may get."""
        return []

    def launch(self, job: jobs.ClaimedJob) -> None:
        """Starts a claimed job (and counts it in ``busy``); a launch failure settles the job."""
        raise NotImplementedError

    def launched(self) -> None:
        """After a fill pass: starts what ``launch`` gathered, for executors that start jobs
        together (the Slurm poller submits a pass's jobs as one job array)."""

    def collect(self) -> None:
        """Settles the jobs that ended (their status from their exit / Slurm state)."""

    def heartbeat(self) -> None:
        """Heartbeats this worker and its jobs; stops jobs whose cancel was requested or that were
        taken away (reaped, removed)."""
        jobs.worker_heartbeat(self.reg, self.id)

    def enforce(self) -> None:
        """Escalates stops whose grace period ran out."""

    def drained(self) -> bool:
        """With ``once``: whether nothing may still come back for this worker to run."""
        return True

    def idle_wait_s(self) -> float:
        """How long to sleep after a pass that claimed nothing."""
        return self.poll_s

    def shutdown(self) -> None:
        """What to do with the running jobs when the loop ends (before the worker is marked stopped)."""

    # ------------------------------------------------------------ control

    def request_stop(self, *_args: object) -> None:
        """Ends the loop (signal handler); ``shutdown`` then runs."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        """Works until stopped. With ``once``: until no queued job fits it, none of its own runs and
        ``drained()``. Returns the number of jobs it started."""
        jobs.register_worker(self.reg, self.id, self.gpus(), self.executor, host=self.host)
        self.say(self.banner())
        last_beat = last_reap = float("-inf")
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    now = time.monotonic()
                    if now - last_reap >= self.reap_every_s:
                        for jid, st in jobs.reap(self.reg, self.expiry_s):
                            self.say(f"job {jid}: heartbeat expired -> {st}")
                        last_reap = now
                    self.collect()
                    if now - last_beat >= self.heartbeat_s:
                        self.heartbeat()
                        last_beat = now
                    self.enforce()
                    claimed_any = self._fill()
                    if self.once and not self.busy() and not claimed_any and self.drained():
                        break
                    failures = 0
                except DBAPIError as e:  # registry restarting / unreachable: keep the jobs, retry
                    failures += 1
                    self.enforce()
                    wait = backoff_s(self.poll_s, failures)
                    self.say(f"registry error ({one_line(e.orig or e)}); retrying in {wait:.0f} s")
                    self._stopping.wait(wait)
                    continue
                if self.max_jobs is not None and self.started_jobs >= self.max_jobs and not self.busy():
                    break
                if not claimed_any:
                    self._stopping.wait(self.idle_wait_s())
        finally:
            try:
                self.shutdown()
            finally:
                try:
                    jobs.worker_heartbeat(self.reg, self.id, status="stopped")
                except Exception as e:
                    log.warning("could not mark worker stopped: %s", e)
        return self.started_jobs

    def _fill(self) -> bool:
        claimed_any = False
        while self.busy() < self.max_parallel and not self._stopping.is_set():
            if self.max_jobs is not None and self.started_jobs >= self.max_jobs:
                break
            try:
                job = jobs.claim(self.reg, self.id, free_gpus=self.free_gpus(), executors=(self.executor,),
                                 host=self.host)
            except BaseException:
                self.launched()  # what this pass claimed before the error still starts
                raise
            if job is None:
                break
            claimed_any = True
            self.launch(job)
        self.launched()
        return claimed_any
