"""Pilot helpers: wait for a screen's thread-worker reads instead of sleeping."""

from __future__ import annotations

import asyncio
import time


async def settled(pilot, screen_type=None, loads: int = 1, timeout: float = 20.0):
    """Waits until the active screen (of ``screen_type``) has finished ``loads`` reads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scr = pilot.app.screen
        if (screen_type is None or isinstance(scr, screen_type)) and getattr(scr, "loads", 0) >= loads:
            await pilot.pause()
            return scr
        await asyncio.sleep(0.02)
    raise AssertionError(f"screen {type(pilot.app.screen).__name__} did not load in {timeout} s")


async def open_detail(pilot, job_key: str, key: str = "enter"):
    """From the runs screen: selects job ``job_key``, presses ``key`` (enter: the detail; l: its
    log tab) and returns the loaded DetailScreen."""
    from ctxsim.tui.screens.detail import DetailScreen
    from ctxsim.tui.screens.runs import RunsScreen

    scr = await settled(pilot, RunsScreen)
    scr.table.move_to_key(job_key)
    await pilot.press(key)
    return await settled(pilot, DetailScreen)


async def refreshed(pilot, timeout: float = 20.0):
    """Triggers one more read of the active screen and waits for it."""
    scr = pilot.app.screen
    deadline = time.monotonic() + timeout
    while scr._in_flight:  # a read already running: let it end first
        if time.monotonic() > deadline or pilot.app._exit_renderables:  # a crashed app ends no read
            raise AssertionError(f"the read in flight on {type(scr).__name__} did not end in {timeout} s")
        await asyncio.sleep(0.02)
    before = scr.loads
    pilot.app.action_refresh_now()
    return await settled(pilot, type(scr), before + 1, timeout)


async def until(pred, timeout: float = 20.0, what: str = "the condition", pilot=None) -> None:
    """Waits until ``pred()`` holds (state a worker thread or the app writes), failing after
    ``timeout``; with ``pilot`` the app also processes its pending messages between looks."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.02)
        if pilot is not None:
            await pilot.pause()


def sync(fn):
    """Runs an async test body with asyncio.run (no async pytest plugin needed)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper
