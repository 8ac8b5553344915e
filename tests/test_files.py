"""ctxsim.files.atomic_write: all or nothing, with the permissions open() would give."""

from __future__ import annotations

import os
import stat

import pytest

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
