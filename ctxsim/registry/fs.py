"""Where a SQLite registry file lives: the filesystem that holds it, and a warning when that is a
network filesystem on which SQLite's locking cannot be trusted (docs/cluster.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from sqlalchemy.engine import make_url

from ctxsim.registry.urls import sqlite_file

# SQLite relies on the filesystem's POSIX locks to keep two writers apart, and in WAL mode on a
# shared-memory index that only processes on one host can see. Network and cluster filesystems
# either implement those locks loosely (client caching, lock daemons that lose state) or share the
# file between nodes that cannot share memory, so writers on several nodes can corrupt the file.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "lustre", "gpfs", "beegfs", "ceph",
    "glusterfs", "fuse.glusterfs", "afs", "panfs",
})

POSTGRES_HINT = "--db postgresql+psycopg://user@host/db"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def _existing(path: Path) -> Path:
    """``path`` made absolute, or its nearest existing parent when it does not exist yet, resolved."""
    p = Path(os.path.abspath(path.expanduser()))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.resolve()


def filesystem_type(path: str | os.PathLike, mounts_file: str | os.PathLike = "/proc/mounts") -> Optional[str]:
    """The fstype of the mount holding ``path`` (the longest mount point that contains it); None
    when the mounts file cannot be read or lists no such mount."""
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return None
    target = str(_existing(Path(path)))
    best: Optional[tuple[int, str]] = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount, fstype = _unescape(fields[1]), _unescape(fields[2])
        if mount != "/":
            mount = mount.rstrip("/")
        if not (target == mount or mount == "/" or target.startswith(mount + "/")):
            continue
        if best is None or len(mount) >= best[0]:  # equal length: a later mount hides an earlier one
            best = (len(mount), fstype)
    return best[1] if best else None


def sqlite_on_network_fs(url: str, mounts_file: str | os.PathLike = "/proc/mounts") -> Optional[str]:
    """A one-line warning when ``url`` is a SQLite file on a network filesystem; None otherwise
    (another database, in-memory SQLite, a local disk, or an unknown filesystem)."""
    try:
        path = sqlite_file(make_url(url))
    except Exception:
        return None
    if path is None:
        return None
    fstype = filesystem_type(path, mounts_file)
    if fstype not in NETWORK_FILESYSTEMS:
        return None
    return (f"SQLite registry {path} is on a network filesystem ({fstype}): SQLite's file locks are unreliable "
            "there, so concurrent writers from several nodes can corrupt the registry; use a PostgreSQL registry "
            f"instead ({POSTGRES_HINT})")
