"""The one log follower (ctxsim.runner.logs): the dashboard's log pane and `ctxsim logs -f`."""

from __future__ import annotations

from ctxsim.runner.logs import LogFollower, job_log_path


def test_whole_file_last_lines_then_only_new_complete_lines(tmp_path):
    p = tmp_path / "stdout.log"
    p.write_text("".join(f"l{i}\n" for i in range(10)) + "par")
    f = LogFollower(p, tail_bytes=None, tail_lines=3)
    assert f.read() == (["l7", "l8", "l9"], False)  # the partial line waits for its newline
    with open(p, "a") as fh:
        fh.write("tial\nunterminated")
    assert f.read() == (["partial"], False)
    assert f.read(final=True) == (["unterminated"], False)  # the job ended: flush what is left
    assert f.read(final=True) == ([], False)


def test_missing_file_and_replaced_file(tmp_path):
    p = tmp_path / "stdout.log"
    f = LogFollower(p, tail_bytes=None)
    assert f.read() == ([], False) and LogFollower(None).read() == ([], False)
    p.write_text("a\nb\n")
    assert f.read() == (["a", "b"], False)
    p.unlink()
    p.write_text("c\n")  # a new file (another inode, shorter): read again from its start
    assert f.read() == (["c"], True)
    assert job_log_path(None) is None and job_log_path(str(tmp_path)) == p
