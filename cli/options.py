"""The options several commands share, declared once: ``--json``, ``--db``, ``--device`` and
``--executor``. Each is an ``Annotated`` type to put on a command parameter; the factories take a
help text where a command says more than the default. Values are checked as they are parsed, with
the same one-line errors (exit 2) the commands printed before.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ctxsim.cli.common import fail
from ctxsim.registry.states import QUEUE_EXECUTORS

DEVICES = ("auto", "cpu", "cuda")
DB_HELP = "Registry: SQLAlchemy URL or SQLite file (default ./experiments.db)."


def _device(value: str) -> str:
    if value not in DEVICES:
        fail(f"--device must be auto, cpu or cuda; got {value!r}")
    return value


def _executor(value: str) -> str:
    if value not in QUEUE_EXECUTORS:
        fail(f"--executor must be local or slurm, got {value!r}")
    return value


def json_option(help: str = "Print JSON only (on stdout).") -> type:
    return Annotated[bool, typer.Option("--json", help=help)]


def device_option(help: str = "auto, cpu or cuda.") -> type:
    return Annotated[str, typer.Option("--device", help=help, callback=_device)]


def executor_option(help: str = "Who runs the jobs: local (ctxsim worker) or slurm (ctxsim worker --executor slurm).") -> type:
    return Annotated[str, typer.Option("--executor", help=help, callback=_executor)]


JsonOpt = json_option()
DbOpt = Annotated[Optional[str], typer.Option("--db", envvar="CTXSIM_DB", help=DB_HELP)]
DeviceOpt = device_option()
ExecutorOpt = executor_option()


RecipeOpt = Annotated[Optional[str], typer.Option(
    "--recipe", help="Recipe table: paper (ResNet-50, the paper's 224/256 recipes; default) or vit-s16-224 (DINO "
    "ViT-S/16 with HIER's settings; docs/recipes-vit.md). Stored in the config (key recipe).")]
ResolutionOpt = Annotated[Optional[int], typer.Option(
    "--resolution", "-r", help="Recipe family: 224 (train.py) or 256 (main.py); default 256 (224 with --recipe vit-s16-224).")]

TrackOpt = Annotated[Optional[str], typer.Option(
    "--track", help="Mirror the run to trackers, comma-separated: tensorboard (<run folder>/tensorboard), mlflow "
    "(MLFLOW_TRACKING_URI; one experiment per dataset), wandb (WANDB_PROJECT; seeds grouped). Stored in the config "
    "(key track), so queued jobs carry it; each is an extra: pip install \"ctxsim[wandb]\".")]


def track_names(value: Optional[str]) -> Optional[list[str]]:
    """The --track value as a list of known tracker names (one line, exit 2, for an unknown one)."""
    from ctxsim.cli.common import EXIT_USAGE
    from ctxsim.errors import CtxsimError
    from ctxsim.names import check_tracker_names

    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    try:
        check_tracker_names(names)
    except CtxsimError as e:
        fail(str(e), EXIT_USAGE)
    return names
