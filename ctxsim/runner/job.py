"""Running one claimed job: the per-job subprocess entry and the foreground runner.

Subprocess (started by the worker in its own process group)::

    python -m ctxsim.runner.job --job ID [--attempt N] [--db URL] [--device auto]

The registry URL comes from ``--db`` or ``$CTXSIM_DB`` (the worker passes it in the environment
so that a password never shows in ``ps``). Exit codes: 0 done, 1 failed (marked in the registry),
75 stopped on request (SIGTERM: the worker decides cancelled or requeued), 3 job not owned.

Stopping: SIGTERM / SIGINT only set a flag, which every job kind polls between its steps (a
training step, a probe step, a toy step) through ``should_stop``; the job then writes its
checkpoint and exits 75. A job blocked inside one step does not see it: its worker SIGKILLs the
process group once its grace period has passed (``LocalWorker.cancel_bound_s`` states the bound,
the Slurm task does the same with its own ``grace_s``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ctxsim.errors import ConfigError, CtxsimError, one_line
from ctxsim.registry import jobs
from ctxsim.registry.db import Registry, open_registry
from ctxsim.registry.outage import call_through_outage
from ctxsim.registry.sink import RegistrySink
from ctxsim.registry.states import JobStatus
from ctxsim.runner import kinds
from ctxsim.runner.torchrun import supervised, under_torchrun
from ctxsim.train.events import EventSink, JsonlSink, MultiSink, NullSink
from ctxsim.train.ranks import env_rank

log = logging.getLogger(__name__)

EXIT_DONE, EXIT_FAILED, EXIT_NOT_OWNED, EXIT_STOPPED = 0, 1, 3, 75


def execute(config_json: str, sink: EventSink, run_dir: str, device: str = "auto",
            should_stop: Optional[Callable[[], bool]] = None) -> Any:
    """Runs a job config in ``run_dir`` through the entry point of its kind (``ctxsim.runner.kinds``:
    ``train`` for a RunConfig, ``toy``, ``probe``, ``reference-eval``, ...). Every kind but
    ``train`` (whose fit appends it itself) gets ``<run_dir>/events.jsonl`` added to ``sink``.
    An unknown kind is a one-line ConfigError."""
    try:
        d = json.loads(config_json)
    except ValueError as e:
        raise ConfigError(f"the job's config is not JSON: {e}") from None
    spec = kinds.lookup(kinds.kind_of(d))
    entry = kinds.load_entry(spec.name)
    if spec.takes_device:
        d = {**d, kinds.RUNTIME_DEVICE: device}
    if spec.writes_events:
        return entry(d, sink, run_dir, should_stop)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    jsonl = JsonlSink(Path(run_dir) / "events.jsonl")
    try:
        return entry(d, MultiSink(sink, jsonl), run_dir, should_stop)
    finally:
        jsonl.close()


def preflight_job(config_json: str, device: str = "auto") -> None:
    """``ctxsim.train.preflight`` for a training job (data, device, sampler, config); other kinds
    have nothing to check. Raises the same one-line ConfigError / DataError as ``ctxsim run``."""
    try:
        d = json.loads(config_json)
    except ValueError as e:
        raise ConfigError(f"the job's config is not JSON: {e}") from None
    if kinds.kind_of(d) != kinds.DEFAULT_KIND:
        return
    from ctxsim.train import RunConfig
    from ctxsim.train.preflight import preflight

    preflight(RunConfig.from_dict(d), device=device)


def _one_line(e: BaseException) -> str:
    """The error stored on a failed job: ``Type: first line`` (just ``Type`` without a message)."""
    text = one_line(e)
    return text if text == type(e).__name__ else f"{type(e).__name__}: {text}"


def job_sink(reg: Registry, job_id: int, extra: Optional[EventSink] = None, config_json: Optional[str] = None,
             run_dir: Optional[str] = None) -> MultiSink:
    """The sinks of a registry job: its RegistrySink (+ ``extra``), and the trackers its config asks
    for (``track``: ctxsim.trackers) plus those of its worker (``ctxsim worker --track``, passed as
    $CTXSIM_TRACK); ``execute`` adds events.jsonl."""
    trackers: list[EventSink] = []
    if config_json:
        try:
            cfg = json.loads(config_json)
        except ValueError:
            cfg = {}
        if not isinstance(cfg, dict):
            cfg = {}
        track = list(dict.fromkeys([*(cfg.get("track") or []), *worker_track()]))
        if track:
            from ctxsim.trackers import tracker_sinks

            trackers = tracker_sinks(dict(cfg, track=track), run_dir)
    return MultiSink(RegistrySink(reg, job_id), extra, *trackers)


WORKER_TRACK_ENV = "CTXSIM_TRACK"


def worker_track() -> list[str]:
    """The trackers a worker adds to every job it runs ($CTXSIM_TRACK, comma-separated)."""
    return [t.strip() for t in os.environ.get(WORKER_TRACK_ENV, "").split(",") if t.strip()]


def _watch_parent(parent_pid: int, poll_s: float = 0.5, launcher: Optional[int] = None) -> None:
    """A job whose worker died must not run unsupervised: kill our own process group. Under
    torchrun (``launcher``: its agent, our parent) the worker is our grandparent."""

    def loop() -> None:
        while True:
            if not supervised(parent_pid, launcher):
                log.error("worker %d is gone: stopping job", parent_pid)
                try:
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                finally:
                    os._exit(EXIT_STOPPED)
            threading.Event().wait(poll_s)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry of the per-job subprocess (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m ctxsim.runner.job")
    ap.add_argument("--db", default=None)
    ap.add_argument("--job", type=int, required=True)
    ap.add_argument("--attempt", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.environ.get("CTXSIM_WORKER_PID")
    if parent and parent.isdigit():
        _watch_parent(int(parent), launcher=os.getppid() if under_torchrun() else None)
    rank = env_rank()  # under torchrun only rank 0 writes to the registry (docs/architecture.md §5.2)

    reg = open_registry(args.db)
    row = jobs.get_job(reg, args.job)
    if row is None or row.status != JobStatus.RUNNING or (args.attempt is not None and row.attempts != args.attempt):
        print(f"job {args.job} is not running under attempt {args.attempt}: "
              f"{row and (row.status, row.attempts)}", file=sys.stderr)
        return EXIT_NOT_OWNED
    attempt, config_json, run_dir = row.attempts, row.config_json, row.run_dir
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:  # not writable, a name too long, a file in the way: the job cannot run here
        msg = f"cannot create the run folder {run_dir}: {e.strerror or e}"
        print(msg, file=sys.stderr, flush=True)
        if rank == 0:
            _finish(reg, args.job, JobStatus.FAILED, attempt=attempt, exit_code=EXIT_FAILED, error=msg)
        return EXIT_FAILED
    print(f"job {args.job} attempt {attempt} pid {os.getpid()} host {socket.gethostname()} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}", flush=True)
    from ctxsim.runner.epoch_log import EpochLogSink  # one line per epoch in stdout.log

    try:  # the checks `ctxsim run` makes before queuing, here too (a job queued with --no-check)
        preflight_job(config_json, device=args.device)
    except CtxsimError as e:
        print(one_line(e), file=sys.stderr, flush=True)
        if rank == 0:
            _finish(reg, args.job, JobStatus.FAILED, attempt=attempt, exit_code=e.exit_code, error=one_line(e))
        return EXIT_FAILED
    sink = job_sink(reg, args.job, EpochLogSink(), config_json, run_dir) if rank == 0 else NullSink()
    try:
        result = execute(config_json, sink, run_dir, device=args.device, should_stop=stop.is_set)
        sink.close()
        if rank == 0 and not stop.is_set():
            kinds.after_done(reg, config_json, result)  # what the kind records beside its events
    except BaseException as e:  # noqa: BLE001 - record every failure in the registry
        if isinstance(e, CtxsimError):  # a known failure (bad checkpoint, missing data...): its one line
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        else:
            traceback.print_exc()
        try:
            sink.close()
        except Exception:
            traceback.print_exc()
        if stop.is_set():
            return EXIT_STOPPED
        if rank == 0:
            _finish(reg, args.job, JobStatus.FAILED, attempt=attempt, exit_code=EXIT_FAILED,
                    error=one_line(e) if isinstance(e, CtxsimError) else _one_line(e))
        return EXIT_FAILED
    if stop.is_set():
        print(f"job {args.job} stopped on request", flush=True)
        return EXIT_STOPPED
    if rank == 0:
        _finish(reg, args.job, JobStatus.DONE, attempt=attempt, exit_code=EXIT_DONE)
    return EXIT_DONE


class _Heartbeat(threading.Thread):
    """Foreground runs heartbeat their own job row and watch its cancel flag."""

    def __init__(self, reg: Registry, worker_id: str, job_id: int, every_s: float, stop: threading.Event) -> None:
        super().__init__(name="job-heartbeat", daemon=True)
        self.reg, self.worker_id, self.job_id, self.every_s, self.stop = reg, worker_id, job_id, every_s, stop
        self.done = threading.Event()
        self.reason: Optional[str] = None

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                owned = jobs.heartbeat_jobs(self.reg, self.worker_id, [self.job_id])
            except Exception as e:  # registry hiccup: try again next beat
                log.warning("heartbeat of job %d failed: %s", self.job_id, e)
                continue
            if self.job_id not in owned:
                self.reason = "lost"
                self.stop.set()
            elif owned[self.job_id]:
                self.reason = JobStatus.CANCELLED
                self.stop.set()


def run_job_foreground(
    reg: Registry, job_id: int, extra_sink: Optional[EventSink] = None, device: str = "auto",
    gpus: Sequence[str] = (), should_stop: Optional[Callable[[], bool]] = None, heartbeat_s: float = 5.0,
) -> Any:
    """Claims queued job ``job_id`` and runs it in this process, recorded in the registry.

    Heartbeats the job (so the reaper leaves it alone) and stops at the next step when
    ``ctxsim cancel ID`` is requested or ``should_stop()`` says so: a cancel is seen within
    ``heartbeat_s`` and honoured at the job's next step check (nothing is killed: this process
    is the user's). Ends the job done / failed / cancelled (Ctrl-C: cancelled, then re-raised;
    ``ctxsim retry ID`` resumes it on a worker).
    Returns what the job returned (``FitResult`` for training jobs).
    """
    worker_id = f"foreground:{socket.gethostname()}:{os.getpid()}"
    claimed = jobs.claim(reg, worker_id, free_gpus=list(gpus), job_id=job_id)
    if claimed is None:
        job = jobs.get_job(reg, job_id)
        if job is None:
            raise jobs.JobNotFoundError(f"no job {job_id}")
        raise jobs.JobStateError(f"job {job_id} is {job.status}, not queued: it cannot run in the foreground")
    stop = threading.Event()
    hb = _Heartbeat(reg, worker_id, job_id, heartbeat_s, stop)
    hb.start()

    def stopping() -> bool:
        return stop.is_set() or bool(should_stop and should_stop())

    fin = dict(attempt=claimed.attempt, worker_id=worker_id)
    log_tee: Optional[_ForegroundLog] = None
    sink: Optional[EventSink] = None
    try:  # from here on every way out settles the job (a run folder that cannot be made included)
        log_tee = _ForegroundLog(claimed.run_dir, job_id, claimed.attempt, worker_id)
        sink = job_sink(reg, job_id, MultiSink(extra_sink, log_tee.sink), claimed.config_json, claimed.run_dir)
        result = execute(claimed.config_json, sink, claimed.run_dir, device=device, should_stop=stopping)
        sink.close()
        if not stopping():
            kinds.after_done(reg, claimed.config_json, result)
    except KeyboardInterrupt:
        _safe_close(sink)
        jobs.finish(reg, job_id, JobStatus.CANCELLED, error="interrupted (Ctrl-C)", **fin)
        raise
    except BaseException as e:
        _safe_close(sink)
        if _removed(reg, job_id):  # `ctxsim rm --force --wait 0` while it ran: its writes failed, say why
            raise jobs.JobNotFoundError(f"job {job_id} was removed while it ran (ctxsim rm): stopped") from None
        _finish(reg, job_id, JobStatus.FAILED, exit_code=EXIT_FAILED, error=_one_line(e), **fin)
        raise
    finally:
        hb.done.set()
        if log_tee is not None:
            log_tee.close()
    if stopping():
        if hb.reason != "lost":
            _finish(reg, job_id, JobStatus.CANCELLED, error="cancel requested" if hb.reason else "stopped", **fin)
    else:
        _finish(reg, job_id, JobStatus.DONE, exit_code=EXIT_DONE, **fin)
    return result


def _removed(reg: Registry, job_id: int) -> bool:
    try:
        return job_id not in jobs.job_states(reg, [job_id])
    except Exception:  # the registry itself failed: not a removal
        return False


class _ForegroundLog:
    """A foreground run writes the log a worker's job writes (``<run_dir>/stdout.log``: a header, one
    line per epoch, the library's log records), so ``ctxsim logs ID`` works for it too."""

    def __init__(self, run_dir: str, job_id: int, attempt: int, worker_id: str) -> None:
        from ctxsim.runner.epoch_log import EpochLogSink
        from ctxsim.runner.logs import job_log_path

        path = job_log_path(run_dir)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8", buffering=1)
        self.fh.write(f"job {job_id} attempt {attempt} pid {os.getpid()} host {socket.gethostname()} "
                      f"({worker_id})\n")
        self.sink = EpochLogSink(self.fh)
        self.handler = logging.StreamHandler(self.fh)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)
        logging.getLogger("ctxsim").addHandler(self.handler)

    def close(self) -> None:
        logging.getLogger("ctxsim").removeHandler(self.handler)
        self.fh.close()


def _finish(reg: Registry, job_id: int, status: JobStatus, **kw: Any) -> bool:
    """``jobs.finish``, waiting out a registry that is briefly away (``ctxsim.registry.outage``):
    a finished run's status is not lost to a server restart."""
    return call_through_outage(lambda: jobs.finish(reg, job_id, status, **kw), what=f"final status of job {job_id}")


def _safe_close(sink: Optional[EventSink]) -> None:
    if sink is None:
        return
    try:
        sink.close()
    except Exception:
        log.exception("closing the job's sinks failed")


if __name__ == "__main__":
    sys.exit(main())
