"""Following a job's growing log file (``<run_dir>/stdout.log``): the one follower behind the
dashboard's log pane and ``ctxsim logs -f``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LOG_FILE = "stdout.log"


def job_log_path(run_dir: Optional[str]) -> Optional[Path]:
    """Where a job writes its stdout/stderr; None for a job without a run folder."""
    return Path(run_dir) / LOG_FILE if run_dir else None


@dataclass
class LogFollower:
    """Follows a growing text file from a byte offset.

    The first read starts ``tail_bytes`` before the end (None: at the start) and keeps only the
    last ``tail_lines`` lines when that is set; later reads return only complete new lines (a
    final read, ``final=True``, also returns an unterminated last line); a file that shrank or was
    replaced is read again from the start, and ``read`` says so (``reset``).
    """

    path: Optional[Path]
    tail_bytes: Optional[int] = 64 * 1024
    tail_lines: Optional[int] = None
    offset: int = -1
    _partial: str = ""
    _ident: Optional[tuple[int, int]] = None

    def read(self, final: bool = False) -> tuple[list[str], bool]:
        """(new complete lines, reset) where reset means the caller should clear what it shows."""
        if self.path is None:
            return [], False
        try:
            st = os.stat(self.path)
        except OSError:
            return self._rest(final), False
        ident = (st.st_dev, st.st_ino)
        reset = False
        first = self.offset < 0
        if first or ident != self._ident or st.st_size < self.offset:
            reset = not first
            tail = self.tail_bytes if first else None
            self.offset = max(0, st.st_size - tail) if tail is not None else 0
            self._partial = ""
            self._ident = ident
            skip_first = self.offset > 0
        else:
            skip_first = False
        lines: list[str] = []
        if st.st_size > self.offset:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(max(0, st.st_size - self.offset))
            self.offset += len(data)
            text = self._partial + data.decode("utf-8", errors="replace")
            lines = text.split("\n")
            self._partial = lines.pop()
            if skip_first and lines:
                lines = lines[1:]  # started mid-line
            lines = [ln.rstrip("\r") for ln in lines]
        lines += self._rest(final)
        if first and self.tail_lines is not None:
            lines = lines[-self.tail_lines:] if self.tail_lines > 0 else []
        return lines, reset

    def _rest(self, final: bool) -> list[str]:
        if not final or not self._partial:
            return []
        rest, self._partial = self._partial.rstrip("\r"), ""
        return [rest]
