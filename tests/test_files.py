"""ctxsim.files.atomic_write: all or nothing, with the permissions open() would give."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import require

from ctxsim import files


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_follows_the_umask(tmp_path, monkeypatch, mask, mode):
    monkeypatch.setattr(files, "_umask", lambda: mask)
    p = tmp_path / "sub" / "grid.png"
    with files.atomic_write(p) as fh:
        fh.write(b"png")
    assert p.read_bytes() == b"png" and stat.S_IMODE(p.stat().st_mode) == mode


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    p = tmp_path / "result.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(p, "w") as fh:
            fh.write("half")
            raise RuntimeError("crash")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["result.json"]


def test_the_umask_is_read_without_changing_it():
    files._umask.cache_clear()
    before = os.umask(0o027)
    try:
        assert files._umask() == 0o027 and os.umask(0o027) == 0o027
    finally:
        os.umask(before)
        files._umask.cache_clear()


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (a disk that can fill up for real), unmounted afterwards."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    require(r.returncode == 0, f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(small_disk):
    """The disk fills up between epochs: epoch 2's checkpoint fails with "No space left on device"
    and the checkpoint's path; epoch 1's checkpoint is intact and loadable, and no temp file is left."""
    from ctxsim.train import fit, recipe
    from ctxsim.train.checkpoint import load_checkpoint
    from ctxsim.train.events import ListSink

    class FillAfterFirstCheckpoint(ListSink):
        def emit(self, event) -> None:
            super().emit(event)
            if event.kind == "checkpoint" and event.data.get("epoch") == 1:
                free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
                with open(small_disk / "filler", "wb") as fh:  # leave 256 KiB: the small event writes still fit
                    fh.write(b"\0" * max(0, free - 256 * 1024))

    run_dir = small_disk / "run"
    cfg = recipe("synthetic", "hybrid", 256).with_overrides(epochs=2, device="cpu", num_workers=0,
                                                            sampler_kw={"num_batches": 2})
    with pytest.raises(OSError) as info:
        fit(cfg, sink=FillAfterFirstCheckpoint(), run_dir=run_dir)
    msg = str(info.value)
    assert "No space left on device" in msg and str(run_dir / "checkpoint.pt") in msg, msg
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
