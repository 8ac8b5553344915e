"""ctxsim.registry.fs: the filesystem of a path from a mounts file, and the warning for a SQLite
registry on a network filesystem."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxsim.registry.fs import NETWORK_FILESYSTEMS, filesystem_type, sqlite_on_network_fs


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """Folders under tmp_path and a fake mounts file that mounts some of them."""
    shared = tmp_path / "shared"
    scratch = shared / "scratch"
    spaced = tmp_path / "lab data"
    for d in (scratch, spaced):
        d.mkdir(parents=True)
    shared_r, scratch_r, spaced_r = (p.resolve() for p in (shared, scratch, spaced))
    spaced_escaped = str(spaced_r).replace(" ", "\\040")
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw 0 0\n"
        f"server:/export {shared_r} nfs4 rw,vers=4.2 0 0\n"
        f"/dev/nvme0n1p1 {scratch_r} xfs rw 0 0\n"
        f"//nas/lab\\040data {spaced_escaped} cifs rw 0 0\n"
        "garbage\n"
    )
    return {"root": tmp_path, "shared": shared, "scratch": scratch, "spaced": spaced, "mounts": mounts}


def test_longest_mount_point_wins(tree: dict[str, Path]) -> None:
    m = tree["mounts"]
    assert filesystem_type(tree["shared"], m) == "nfs4"
    assert filesystem_type(tree["shared"] / "x.db", m) == "nfs4"
    assert filesystem_type(tree["scratch"], m) == "xfs"  # nested mount under the nfs one
    assert filesystem_type(tree["root"], m) == "ext4"  # only "/" contains it
    # a sibling whose name starts like a mount point is not inside it
    sibling = tree["root"] / "shared-not"
    sibling.mkdir()
    assert filesystem_type(sibling, m) == "ext4"


def test_octal_escapes_in_mount_points(tree: dict[str, Path]) -> None:
    assert filesystem_type(tree["spaced"] / "experiments.db", tree["mounts"]) == "cifs"


def test_missing_file_uses_its_nearest_existing_parent(tree: dict[str, Path]) -> None:
    m = tree["mounts"]
    assert filesystem_type(tree["shared"] / "not" / "yet" / "experiments.db", m) == "nfs4"
    assert filesystem_type(tree["scratch"] / "new" / "experiments.db", m) == "xfs"


def test_later_mount_on_the_same_point_hides_the_earlier(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nsrv:/a {tmp_path.resolve()} nfs rw 0 0\n"
                      f"tmpfs {tmp_path.resolve()} tmpfs rw 0 0\n")
    assert filesystem_type(tmp_path, mounts) == "tmpfs"


def test_unreadable_mounts_file_gives_none(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path, tmp_path / "no-such-mounts") is None


def test_warning_names_file_filesystem_reason_and_way_out(tree: dict[str, Path]) -> None:
    db = tree["shared"] / "runs" / "experiments.db"  # not created yet
    msg = sqlite_on_network_fs(f"sqlite:///{db}", tree["mounts"])
    assert msg is not None and "\n" not in msg
    assert str(db) in msg
    assert "nfs4" in msg
    assert "lock" in msg and "corrupt" in msg and "several nodes" in msg
    assert "PostgreSQL" in msg and "--db postgresql+psycopg://user@host/db" in msg


def test_cifs_with_a_space_warns(tree: dict[str, Path]) -> None:
    msg = sqlite_on_network_fs(f"sqlite:///{tree['spaced'] / 'experiments.db'}", tree["mounts"])
    assert msg is not None and "cifs" in msg and "lab data" in msg


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://ctxsim:secret@db.lab.example:5432/ctxsim",
    "postgresql://ctxsim@db/ctxsim",
    "sqlite://",
    "sqlite:///:memory:",
    "not a url at all",
])
def test_no_warning_for_other_databases(tree: dict[str, Path], url: str) -> None:
    assert sqlite_on_network_fs(url, tree["mounts"]) is None


def test_no_warning_on_a_local_disk(tree: dict[str, Path]) -> None:
    assert sqlite_on_network_fs(f"sqlite:///{tree['root'] / 'experiments.db'}", tree["mounts"]) is None  # ext4
    assert sqlite_on_network_fs(f"sqlite:///{tree['scratch'] / 'experiments.db'}", tree["mounts"]) is None  # xfs


def test_network_filesystems_listed() -> None:
    for fs in ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "lustre", "gpfs", "beegfs", "ceph",
               "glusterfs", "fuse.glusterfs", "afs", "panfs"):
        assert fs in NETWORK_FILESYSTEMS
    assert not {"ext4", "xfs", "btrfs", "tmpfs", "zfs"} & NETWORK_FILESYSTEMS
