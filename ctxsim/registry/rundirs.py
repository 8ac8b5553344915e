"""The one naming rule of a job's run folder (checkpoint, events.jsonl, stdout.log, result.json).

``<runs root>/<stem>-<hash8>`` is the folder of a config, where ``stem`` is the config's
``name``, else ``<dataset>-<loss>-<resolution>`` (the parts a config has; a dict job kind's
``dataset`` is its kind) and ``hash8`` the first 8 hex digits of the config hash. ``ctxsim run``
uses it, so that running the same config again resumes its unfinished run from its checkpoint.
A job that must not share a folder with another run of its config (sweeps, the dashboard, toy
and reference runs, ``ctxsim run --fresh`` or a config whose folder holds a finished run) gets
the same name suffixed with its job id: ``<stem>-<hash8>-job<id>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


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
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def run_folder(root: str | os.PathLike, fields: dict[str, Any], job_id: Optional[int] = None) -> Path:
    """The run folder of a job config under ``root`` (see the module docstring). ``fields``: the
    job columns of the config (``ctxsim.registry.jobs.config_fields``: config_json, config_hash,
    dataset, loss, resolution); ``job_id``: the job's own folder instead of the config's."""
    name = f"{_stem(fields)}-{str(fields['config_hash'])[:8]}"
    if job_id is not None:
        name += f"-job{int(job_id)}"
    return Path(root) / name
