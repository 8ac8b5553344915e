"""The real ``ctxsim tui`` in a tmux pane while a job writes to the registry: the run progresses
on screen, its curve updates, and quitting leaves the terminal clean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ctxsim.registry.db import open_registry
from ctxsim.registry.models import Job, utcnow

pytestmark = pytest.mark.tmux

HERE = Path(__file__).parent


class Pane:
    def __init__(self, tmux: str, sock: Path) -> None:
        self.tmux, self.sock = tmux, str(sock)

    def __call__(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-S", self.sock, *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def capture(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.capture()
            m = re.search(pattern, text.rstrip() if pattern.endswith("\\Z") else text)
            if m:
                return m
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared; last pane:\n{text}")


def _quit_leaves_terminal_clean(pane, marker: str) -> None:
    """Presses q (from the runs table: q in a sub-view goes back one level), then checks the prompt
    is back, alt screen and mouse modes are off, the cursor is shown and no dashboard text
    (``marker``, point counter, plot axis) is left on the pane."""
    pane("send-keys", "-t", "t", "q")
    pane.wait_for(r"(?m)^\$\s*\Z", timeout=30)  # the shell prompt is back
    flags = pane("display-message", "-p", "-t", "t",
                 "#{alternate_on} #{mouse_any_flag} #{mouse_button_flag} #{mouse_sgr_flag} #{cursor_flag}").split()
    assert flags[:4] == ["0", "0", "0", "0"], flags  # alt screen and mouse modes off
    assert flags[4] == "1", flags  # cursor shown again
    after = pane.capture()
    assert marker not in after and "points" not in after and "┤" not in after, after


def test_tmux_live_dashboard(tmux_bin, tmp_path):
    db = tmp_path / "live.db"
    reg = open_registry(db)
    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    epochs = 6
    with reg.begin() as s:
        s.add(Job(id=1, name="live-job", dataset="digits", loss="hybrid", resolution=256, config_json='{"epochs": 6}',
                  config_hash="live", status="running", total_epochs=epochs, started_at=utcnow() - timedelta(seconds=1),
                  heartbeat_at=utcnow(), run_dir=str(run_dir), gpus="0"))
    from ctxsim.baselines import ensure_baselines

    ensure_baselines(reg)
    reg.dispose()

    pane = Pane(tmux_bin, tmp_path / "tmux.sock")
    env_cmd = f"env -i PATH={os.environ['PATH']} HOME={tmp_path} TERM=xterm-256color PS1='$ ' bash --norc --noprofile"
    pane("new-session", "-d", "-s", "t", "-x", "150", "-y", "45", env_cmd)
    writer = None
    try:
        pane("send-keys", "-t", "t", f"{sys.executable} -m ctxsim.cli.main tui --db {db} --poll 0.3", "Enter")
        pane.wait_for(r"Dataset", timeout=60)
        writer = subprocess.Popen([sys.executable, str(HERE / "live_writer.py"), str(db), "1", str(run_dir), str(epochs), "2.5"])
        # the runs table shows the epoch counter moving
        # (the epoch column comes before the name: columns are in order of importance)
        first = int(pane.wait_for(r"\s(\d+)/6\s.*live-job", timeout=60).group(1))
        later = int(pane.wait_for(rf"\s([{first + 1}-6])/6\s.*live-job", timeout=60).group(1))
        assert later > first
        # the detail view: the point counter grows and the drawn curve changes
        pane("send-keys", "-t", "t", "Enter")
        pane.wait_for(r"MAP@R %", timeout=30)  # the detail's charts: loss, R@1 %, MAP@R %
        m1 = pane.wait_for(r"(\d+) points", timeout=30)
        plot1 = pane.capture()
        n1 = int(m1.group(1))
        deadline = time.monotonic() + 60
        n2, plot2 = n1, plot1
        while time.monotonic() < deadline and n2 <= n1:
            time.sleep(0.3)
            plot2 = pane.capture()
            m = re.search(r"(\d+) points", plot2)
            n2 = int(m.group(1)) if m else n1
        assert n2 > n1, plot2

        def body(text: str) -> list[str]:
            return [ln for ln in text.splitlines() if "┤" in ln or "│" in ln]

        assert body(plot1) != body(plot2)
        pane("send-keys", "-t", "t", "3")  # log tab follows stdout.log
        pane.wait_for(r"epoch \d/6 loss", timeout=30)
        pane("send-keys", "-t", "t", "q")  # back one level: the runs table, the app still open
        pane.wait_for(r"\A(?![\s\S]*Curves \[1\])[\s\S]*Dataset", timeout=30)
        _quit_leaves_terminal_clean(pane, "Dataset")
    finally:
        if writer is not None:
            writer.kill()
            writer.wait(10)
        subprocess.run([tmux_bin, "-S", str(tmp_path / "tmux.sock"), "kill-server"], capture_output=True)


def test_tmux_80x24_warning_help_and_eta(tmux_bin, tmp_path):
    """At 80×24: a stopped worker's warning is readable on the status line, ``?`` opens the help
    and Esc closes it, a running job shows an ETA, and q quits cleanly from the runs table."""
    from ctxsim.registry.models import Worker

    db = tmp_path / "small.db"
    reg = open_registry(db)
    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    epochs = 6
    with reg.begin() as s:
        s.add(Worker(id="gpu09-w1", host="gpu09", pid=99, gpus="0", executor="local",
                     started_at=utcnow() - timedelta(hours=1), heartbeat_at=utcnow() - timedelta(minutes=10),
                     status="alive"))  # killed without a goodbye: its heartbeat stopped
        s.add(Job(id=1, name="live-job", dataset="digits", loss="hybrid", resolution=256, config_json='{"epochs": 6}',
                  config_hash="live", status="running", total_epochs=epochs, started_at=utcnow() - timedelta(seconds=1),
                  heartbeat_at=utcnow(), run_dir=str(run_dir), gpus="0"))
    reg.dispose()

    pane = Pane(tmux_bin, tmp_path / "tmux.sock")
    env_cmd = f"env -i PATH={os.environ['PATH']} HOME={tmp_path} TERM=xterm-256color PS1='$ ' bash --norc --noprofile"
    pane("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", env_cmd)
    writer = None
    try:
        pane("send-keys", "-t", "t", f"{sys.executable} -m ctxsim.cli.main tui --db {db} --poll 0.3", "Enter")
        pane.wait_for(r"live-job", timeout=60)
        # the status line (second line from the bottom) starts with the warning, whole
        status = pane.wait_for(r"(?m)^ ?⚠ worker gpu09-w1 dead \(no heartbeat\)", timeout=30)
        assert status is not None
        lines = pane.capture().rstrip("\n").splitlines()
        assert "⚠ worker gpu09-w1 dead (no heartbeat)" in lines[-2] and "Quit" in lines[-1], lines[-2:]
        writer = subprocess.Popen([sys.executable, str(HERE / "live_writer.py"), str(db), "1", str(run_dir),
                                   str(epochs), "2.5"])
        # a running job shows its ETA once an epoch is done (a duration: 12s, 3m05s...)
        # (columns: status, epoch, best R@1, ETA, dataset/loss/res, Δ paper, name)
        eta = pane.wait_for(r"running\s+[1-5]/6\s+\d+\.\d @\d\s+(\d+m\d\ds|\d+s)\s+digits/hybrid/256\s+\S+\s+live-job",
                            timeout=90)
        assert eta.group(1)
        pane("send-keys", "-t", "t", "?")
        pane.wait_for(r"Runs: keys", timeout=30)
        pane("send-keys", "-t", "t", "Escape")
        pane.wait_for(r"\A(?![\s\S]*Runs: keys)[\s\S]*live-job", timeout=30)
        _quit_leaves_terminal_clean(pane, "live-job")
    finally:
        if writer is not None:
            writer.kill()
            writer.wait(10)
        subprocess.run([tmux_bin, "-S", str(tmp_path / "tmux.sock"), "kill-server"], capture_output=True)


def _alt(lo: int, hi: int) -> str:
    """A regex alternation of the integers lo..hi."""
    return "|".join(str(k) for k in range(lo, hi + 1))


@pytest.mark.slow
def test_tmux_dashboard_real_tiny_job(tmux_bin, tmp_path):
    """Issue 6 end to end: a real synthetic training job, queued in a fresh registry and run by a
    real worker subprocess, is followed live by ``ctxsim tui`` in tmux until it is done."""
    db = tmp_path / "real.db"
    # 30 batches an epoch: about 1 s per epoch on an idle 2-core machine (~15 s with start-up), several
    # times longer under load, which only gives the live checks more time; only the final wait scales with it
    epochs = 12
    queued = subprocess.run(
        [sys.executable, "-m", "ctxsim.cli.main", "run", "-d", "synthetic", "-l", "hybrid", "--epochs", str(epochs),
         "--set", "sampler.num_batches=30", "--name", "tiny-live",
         "--run-dir", str(tmp_path / "run"), "--detach", "--json", "--db", str(db)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert queued.returncode == 0, queued.stderr
    assert '"status": "queued"' in queued.stdout, queued.stdout

    sock = tmp_path / "tmux.sock"
    pane = Pane(tmux_bin, sock)
    env_cmd = f"env -i PATH={os.environ['PATH']} HOME={tmp_path} TERM=xterm-256color PS1='$ ' bash --norc --noprofile"
    pane("new-session", "-d", "-s", "t", "-x", "150", "-y", "45", env_cmd)
    worker = None
    worker_log = open(tmp_path / "worker.log", "w")
    try:
        pane("send-keys", "-t", "t", f"cd {tmp_path} && {sys.executable} -m ctxsim.cli.main tui --db {db} --poll 0.3",
             "Enter")
        pane.wait_for(r"tiny-live", timeout=60)  # the queued job is listed before any worker runs
        worker = subprocess.Popen(
            [sys.executable, "-m", "ctxsim.cli.main", "worker", "--once", "--gpus", "", "--poll", "0.2", "--db", str(db)],
            cwd=tmp_path, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})  # the job shares 2 cores with the TUI and tmux
        # the runs table shows the real epoch counter moving while the job runs
        first = int(pane.wait_for(rf"\s({_alt(1, epochs - 1)})/{epochs}\s.*tiny-live", timeout=120).group(1))
        later = int(pane.wait_for(rf"\s({_alt(first + 1, epochs)})/{epochs}\s.*tiny-live",
                                  timeout=120).group(1))
        assert first < later <= epochs
        # the detail view while it runs: the point counter grows and the drawn curve changes
        pane("send-keys", "-t", "t", "Enter")
        pane.wait_for(r"MAP@R %", timeout=30)  # the detail's charts: loss, R@1 %, MAP@R %
        m1 = pane.wait_for(r"(\d+) points", timeout=30)
        plot1, n1 = pane.capture(), int(m1.group(1))
        deadline = time.monotonic() + 120
        n2, plot2 = n1, plot1
        while time.monotonic() < deadline and n2 <= n1:
            time.sleep(0.3)
            plot2 = pane.capture()
            m = re.search(r"(\d+) points", plot2)
            n2 = int(m.group(1)) if m else n1
        assert n2 > n1, f"job finished or stalled before the detail view saw new points:\n{plot2}"

        def body(text: str) -> list[str]:
            return [ln for ln in text.splitlines() if "┤" in ln or "│" in ln]

        assert body(plot1) != body(plot2)
        pane("send-keys", "-t", "t", "3")  # log tab follows the job's stdout.log written by the worker
        pane.wait_for(r"ctxsim job 1 attempt 1", timeout=30)
        # one line per epoch from the worker's job (loss, time, images/s), no faiss loader noise
        pane.wait_for(rf"epoch \d+/{epochs} loss \S+ · \S+ s", timeout=120)
        assert "swigfaiss" not in pane.capture()
        # the job finishes: the worker exits (it was started with --once) and the table says done
        assert worker.wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()
        # back to the runs table (BSpace: a lone Escape followed by "q" would read as alt+q)
        pane("send-keys", "-t", "t", "BSpace")
        pane.wait_for(r"\A(?![\s\S]*Curves \[1\])[\s\S]*Dataset", timeout=30)
        pane.wait_for(rf"\bdone\s+{epochs}/{epochs}\s.*tiny-live", timeout=30)
        _quit_leaves_terminal_clean(pane, "tiny-live")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # the worker stops its job's process group
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        worker_log.close()
        subprocess.run([tmux_bin, "-S", str(sock), "kill-server"], capture_output=True)
