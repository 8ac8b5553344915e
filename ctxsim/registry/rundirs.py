"""The one naming rule of a job's run folder (checkpoint, events.jsonl, stdout.log, result.json).

``<runs root>/<stem>-<hash8>`` is the folder of a config, where ``stem`` is the config's
``name``, else ``<dataset>-<loss>-<resolution>`` (the parts a config has; a dict job kind's
``dataset`` is its kind) and ``hash8`` the first 8 hex digits of the config hash. ``ctxsim run``
uses it, so that running the same config again resumes its unfinished run from its checkpoint.
A job that must not share a folder with another run of its config (sweeps, the dashboard, toy
and reference runs, ``ctxsim run --fresh`` or a config whose folder holds a finished run) gets
the same name suffixed with its job id: ``<stem>-<hash8>-job<id>``.

A stem longer than ``MAX_STEM_BYTES`` (UTF-8) is shortened deterministically to fit a filesystem's
255-byte limit on one name: its head, ``~`` and 8 hex digits of the whole stem's sha256. The
registry keeps the full name (in the config).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

MAX_STEM_BYTES = 200  # + "-<hash8>-job<id>" stays far below NAME_MAX (255 bytes on Linux and macOS)


def _stem(fields: dict[str, Any]) -> str:
    try:
        name = json.loads(fields.get("config_json") or "{}").get("name")
    except (ValueError, AttributeError):
        name = None
    if not name:
        parts = [fields.get("dataset", "?")]
        if fields.get("loss") not in (None, "-"):
            parts.append(fields["loss"])
        if fields.get("resolution") is not None:
            parts.append(fields["resolution"])
        name = "-".join(str(p) for p in parts)
    return short_stem("".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)))


def short_stem(stem: str, limit: int = MAX_STEM_BYTES) -> str:
    """``stem`` itself when its UTF-8 form fits ``limit`` bytes; else its longest head that fits
    with ``~`` and 8 hex digits of its sha256 (deterministic: the same name, the same folder)."""
    raw = stem.encode()
    if len(raw) <= limit:
        return stem
    head = raw[: limit - 9].decode(errors="ignore")  # never half a character
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:8]}"


def run_folder(root: str | os.PathLike, fields: dict[str, Any], job_id: Optional[int] = None) -> Path:
    """The run folder of a job config under ``root`` (see the module docstring). ``fields``: the
    job columns of the config (``ctxsim.registry.jobs.config_fields``: config_json, config_hash,
    dataset, loss, resolution); ``job_id``: the job's own folder instead of the config's."""
    name = f"{_stem(fields)}-{str(fields['config_hash'])[:8]}"
    if job_id is not None:
        name += f"-job{int(job_id)}"
    return Path(root) / name
