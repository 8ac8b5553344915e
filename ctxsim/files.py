"""Atomic file writes: a temporary file in the target's folder, renamed over it when complete, so
a crash never leaves half a checkpoint, result or picture. Torch-free, cheap to import."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = False) -> Iterator[IO]:
    """``with atomic_write(p) as fh: ...`` writes ``p`` all at once or not at all (temp file +
    ``os.replace``). The file gets the permissions ``open`` would give it (0666 less the umask;
    ``mkstemp`` alone makes 0600, unreadable to the rest of a group sharing a report folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(e)
        if full is not None:  # say so, with the file (torch.save hides it behind a RuntimeError)
            raise OSError(full.errno, full.strerror or os.strerror(full.errno), str(path)) from e
        raise


def _disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error in ``exc``'s chain of causes, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
