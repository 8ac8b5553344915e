"""`ctxsim tui --serve`: a busy or privileged port is one line and exit 2; and a real browser
(headless Chromium, driven over the DevTools protocol) loads the served page from 127.0.0.1, the
page's WebSocket delivers the dashboard, and a screenshot shows the runs table.

The browser test skips with its reason where Chromium (Debian package ``chromium``) or
textual-serve is missing, and fails instead when CI=true (``.ci/run`` installs both).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ctxsim.registry import jobs
from ctxsim.registry.db import open_registry
from ctxsim.runner.probe import probe_config


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "experiments.db"
    reg = open_registry(path)
    failed = jobs.enqueue(reg, probe_config(label="served2"), name="served-failed")
    jobs.enqueue(reg, probe_config(label="served"), name="served-queued")  # newest: under the cursor
    from sqlalchemy import update

    from ctxsim.registry.models import Job

    with reg.begin() as s:  # a failed job: its status is drawn in red, a colour the loading page lacks
        s.execute(update(Job).where(Job.id == failed).values(status="failed", error="boom"))
    reg.dispose()
    return path


def _ctxsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CTXSIM_DB"}
    return subprocess.run([sys.executable, "-m", "ctxsim.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_a_busy_port_is_one_line_and_exit_2(db):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _ctxsim("tui", "--serve", "--port", str(port), "--db", str(db))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; pick another with --port"]
    assert "serving" not in r.stdout + r.stderr


def test_a_privileged_port_is_named_as_such(monkeypatch):
    from ctxsim.cli import tui_cmd

    def refuse(self, addr):  # - what bind() does for a normal user below 1024
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    msg = tui_cmd.port_problem("127.0.0.1", 80)
    assert msg is not None and "port 80 on 127.0.0.1 is privileged" in msg and "--port" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind privileged ports: the check above covers the wording")
def test_serve_on_a_privileged_port_as_a_normal_user(db):
    r = _ctxsim("tui", "--serve", "--port", "80", "--db", str(db))
    if r.returncode == 0:  # pragma: no cover - ip_unprivileged_port_start lowered on this host
        pytest.skip("this host lets normal users bind port 80")
    assert r.returncode == 2 and "privileged" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _need(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed here (apt-get install chromium; pip install 'ctxsim[serve]')")


class DevTools:
    """Minimal Chrome DevTools protocol client on aiohttp (a textual-serve dependency)."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]


def _looks_like_the_runs_table(png: bytes) -> tuple[bool, str]:
    """The dashboard, not the loading page: a full-width band of one colour (the table's cursor
    row; the loading page's widest box is half the width) and red pixels (a failed job's status)."""
    from io import BytesIO

    from PIL import Image

    im = Image.open(BytesIO(png)).convert("RGB")
    w, h = im.size
    px = im.load()
    band = False
    for y in range(0, h, 2):
        row = [px[x, y] for x in range(0, w, 4)]
        top = max(set(row), key=row.count)
        if row.count(top) >= 0.9 * len(row) and top != px[0, h - 1] and max(top) - min(top) > 20:
            band = True
            break
    red = sum(1 for y in range(0, h, 2) for x in range(0, w, 2)
              if px[x, y][0] > 150 and px[x, y][1] < 90 and px[x, y][2] < 90)
    return band and red >= 10, f"size {w}x{h}, full-width band {band}, red pixels {red}"


async def _browse(url: str, out: Path, deadline_s: float) -> tuple[dict, bytes]:
    import aiohttp

    profile = tempfile.mkdtemp(prefix="ctxsim-chromium-")
    chrome = subprocess.Popen(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--window-size=1280,800", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + deadline_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert chrome.poll() is None and time.monotonic() < end, "chromium did not start"
            await asyncio.sleep(0.1)
        devtools_port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            targets = await (await http.get(f"http://127.0.0.1:{devtools_port}/json")).json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = DevTools(ws)
                await cdp.call("Page.enable")
                await cdp.call("Page.navigate", url=url)
                state, png, why = {}, b"", ""
                while time.monotonic() < end:  # until the app has drawn its table (or the deadline)
                    r = await cdp.call("Runtime.evaluate", returnByValue=True, expression=(
                        "JSON.stringify({body: document.body ? document.body.className : '',"
                        " canvases: document.querySelectorAll('.textual-terminal canvas').length,"
                        " terminal: (() => { const t = document.querySelector('.textual-terminal');"
                        " return t ? getComputedStyle(t).opacity : null })()})"))
                    state = json.loads(r["result"]["value"])
                    if "-first-byte" in state["body"]:
                        png = base64.b64decode((await cdp.call("Page.captureScreenshot", format="png"))["data"])
                        ok, why = _looks_like_the_runs_table(png)
                        if ok:
                            state["why"] = why
                            break
                    await asyncio.sleep(0.5)
                state.setdefault("why", why)
                out.write_bytes(png)
                return state, png
    finally:
        chrome.terminate()
        try:
            chrome.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            chrome.kill()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_real_browser_shows_the_runs_table(db, tmp_path):
    _need("chromium", shutil.which("chromium") is not None)
    try:
        import aiohttp  # noqa: F401  (only: is it installed?)
        import textual_serve  # noqa: F401  (as above)
        from PIL import Image  # noqa: F401  (as above)
    except ImportError as e:
        _need(e.name or "textual-serve", False)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CTXSIM_DB"}
    server = subprocess.Popen([sys.executable, "-m", "ctxsim.cli.main", "tui", "--serve", "--port", str(port),
                               "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, start_new_session=True)
    try:
        end = time.monotonic() + 60
        while True:  # the server is up when its port accepts a connection
            assert server.poll() is None, server.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "the server did not listen within 60 s"
                time.sleep(0.2)
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "textual.js" in html and "/ws" in html and "ctxsim" in html
        shot = tmp_path / "dashboard.png"
        state, png = asyncio.run(_browse(f"http://127.0.0.1:{port}/", shot, deadline_s=150))
        assert png, f"no screenshot (page state {state})"
        ok, why = _looks_like_the_runs_table(png)
        assert ok, f"the screenshot {shot} does not show the runs table: {why}; page state {state}"
        assert state["canvases"] >= 1 and state["terminal"] == "1", state
    finally:
        os.killpg(server.pid, signal.SIGINT)  # the server and the dashboard process it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
    log = server.stdout.read()
    assert "GET /ws" in log, log[-2000:]  # the page opened the WebSocket that carries the app
