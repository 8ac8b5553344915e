"""Job kinds: the table from a job config's ``"kind"`` to the function that runs it.

A job's stored config is JSON. A config without ``"kind"`` is a training ``RunConfig`` (kind
``train``); any other kind is a dict with a ``"kind"`` key. The runner (``ctxsim.runner.job``)
looks the kind up here and loads its entry point by name with importlib, so that the runner
never imports the packages above it (``ctxsim.reference``: toy runs and reference evaluation).
A new job kind is one line in ``KINDS`` and one function.

Every entry point has the one signature ``entry(cfg, sink, run_dir, should_stop) -> result``:
``cfg`` is the job's config as a dict, ``sink`` receives the job's events (registry and
``<run_dir>/events.jsonl``), ``run_dir`` is the job's run folder and ``should_stop()`` is polled
by the job between steps (see ``ctxsim.runner.job`` for how quickly a cancel is honoured). Kinds
that take a device (``takes_device``) find the runner's ``--device`` in ``cfg[RUNTIME_DEVICE]``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ctxsim.errors import ConfigError
from ctxsim.names import RUNTIME_DEVICE  # noqa: E402,F401  (the key execute() adds for kinds that take a device)
from ctxsim.train.events import EventSink

DEFAULT_KIND = "train"

Entry = Callable[[dict, EventSink, str, Optional[Callable[[], bool]]], Any]


@dataclass(frozen=True)
class JobKind:
    name: str
    entry: str  # "package.module:function"
    takes_device: bool = False
    writes_events: bool = False  # the entry appends <run_dir>/events.jsonl itself (train)
    doc: str = ""
    # "package.module:function" the runner calls as fn(registry, cfg, result) after the entry returns
    # and before the job is marked done (what a kind records beside its events); "" for none
    on_done: str = ""


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("train", "ctxsim.runner.kinds:run_train", True, True,
            "a training RunConfig (fit, resumed from its checkpoint)"),
    JobKind("toy", "ctxsim.reference.toy:run_toy_job", False, False, "the 2-D toy experiment"),
    JobKind("probe", "ctxsim.runner.probe:run_probe", False, False, "a torch-free queue self-test"),
    JobKind("reference-eval", "ctxsim.reference.import_reference:run_reference_eval_job", True, False,
            "evaluation of an imported reference checkpoint"),
    JobKind("untrained", "ctxsim.baselines.untrained:run_untrained_job", True, False,
            "the untrained-backbone baseline of a RunConfig (Δ untrained)",
            on_done="ctxsim.baselines.untrained:record_untrained_job"),
)}


def kind_of(cfg: Any) -> str:
    """The kind of a job config dict (``train`` when it has no ``"kind"``)."""
    kind = cfg.get("kind", DEFAULT_KIND) if isinstance(cfg, dict) else None
    if not isinstance(kind, str):
        raise ConfigError("a job config must be a JSON object (a RunConfig or a dict with a \"kind\")")
    return kind


def lookup(kind: str) -> JobKind:
    """The table entry of ``kind``; ConfigError (one line) for an unknown kind."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown job kind {kind!r} (known: {', '.join(sorted(KINDS))})") from None


def _load(path: str) -> Callable:
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def load_entry(kind: str) -> Entry:
    """The entry point of ``kind``, imported by name."""
    return _load(lookup(kind).entry)


def after_done(reg: Any, config_json: str, result: Any) -> None:
    """Calls the ``on_done`` hook of a finished job's kind (nothing for kinds without one)."""
    import json

    try:
        d = json.loads(config_json)
    except ValueError:
        return
    spec = lookup(kind_of(d))
    if spec.on_done:
        _load(spec.on_done)(reg, d, result)


def run_train(cfg: dict, sink: EventSink, run_dir: str | os.PathLike,
              should_stop: Optional[Callable[[], bool]] = None) -> Any:
    """Entry of the ``train`` kind: ``fit`` in ``run_dir`` with resume=True (config.json,
    events.jsonl and result.json in the run folder); returns the ``FitResult``."""
    from ctxsim.train import RunConfig, fit_in_dir

    d = dict(cfg)
    device = d.pop(RUNTIME_DEVICE, "auto")
    return fit_in_dir(RunConfig.from_dict(d), run_dir, sink=sink, device=device, resume=True,
                      should_stop=should_stop)
