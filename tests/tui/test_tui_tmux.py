"""The real ``ctxsim tui`` in a tmux pane while a job writes to the registry: the run progresses
on screen, its curve updates, and quitting leaves the terminal clean."""

from __future__ import annotations

import os
import re
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
        first = int(pane.wait_for(r"live-job.*?\s(\d+)/6\s", timeout=60).group(1))
        later = int(pane.wait_for(rf"live-job.*?\s([{first + 1}-6])/6\s", timeout=60).group(1))
        assert later > first
        # the detail view: the point counter grows and the drawn curve changes
        pane("send-keys", "-t", "t", "Enter")
        pane.wait_for(r"loss \(total and terms\)", timeout=30)
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
        pane("send-keys", "-t", "t", "q")
        pane.wait_for(r"(?m)^\$\s*\Z", timeout=30)  # the shell prompt is back
        flags = pane("display-message", "-p", "-t", "t",
                     "#{alternate_on} #{mouse_any_flag} #{mouse_button_flag} #{mouse_sgr_flag} #{cursor_flag}").split()
        assert flags[:4] == ["0", "0", "0", "0"], flags  # alt screen and mouse modes off
        assert flags[4] == "1", flags  # cursor shown again
        after = pane.capture()
        assert "Dataset" not in after and "points" not in after and "┤" not in after, after
    finally:
        if writer is not None:
            writer.kill()
            writer.wait(10)
        subprocess.run([tmux_bin, "-S", str(tmp_path / "tmux.sock"), "kill-server"], capture_output=True)
