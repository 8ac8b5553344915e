"""Helpers for tests that interrupt a running job: a ``ctxsim run`` subprocess stopped with Ctrl-C
once it has taken a step, and a foreground probe job running in a thread."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


def interrupt_after_first_step(cmd: list[str], events: Path, env: dict[str, str],
                               timeout_s: float = 120) -> tuple[int, str, str]:
    """Starts ``cmd``, waits for its first ``step`` event in ``events`` (events.jsonl), sends SIGINT
    and returns (exit code, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + timeout_s
    while time.time() < deadline and p.poll() is None:
        if events.exists() and '"kind": "step"' in events.read_text():
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout_s)
    return p.returncode, out, err


class ForegroundProbe:
    """A queued probe job run by ``run_job_foreground`` in a thread; ``stepped`` is set at its first
    step, ``outcome`` holds its ``result`` or the ``error`` it raised."""

    def __init__(self, reg: Any, job_id: int) -> None:
        from ctxsim.runner.job import run_job_foreground

        self.stepped = threading.Event()
        self.outcome: dict[str, Any] = {}
        probe = self

        class Steps:
            def emit(self, event: Any) -> None:
                if event.kind == "step":
                    probe.stepped.set()

            def close(self) -> None:
                """Nothing to release."""

        def work() -> None:
            try:
                probe.outcome["result"] = run_job_foreground(reg, job_id, extra_sink=Steps(), heartbeat_s=0.05)
            except BaseException as e:  # noqa: BLE001 - the tests assert on it
                probe.outcome["error"] = e

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 60) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the job did not stop"


def run_ctxsim(*args: str, timeout: float = 120, cwd: Any = None) -> subprocess.CompletedProcess:
    """``python -m ctxsim.cli.main ARGS`` in a subprocess (no CTXSIM_DB from the environment)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CTXSIM_DB"}
    return subprocess.run([sys.executable, "-m", "ctxsim.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def wait_for(cond, timeout: float, what: str, detail=None):
    """Polls ``cond()`` every 0.2 s until it is truthy (returned) or ``timeout`` passes (AssertionError
    naming ``what``, with ``detail()`` appended, e.g. a worker's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{detail()}" if detail else ""))
