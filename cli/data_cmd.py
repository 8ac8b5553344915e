"""``ctxsim data download|prepare|verify DATASET --root DIR`` (reference-implementation §4.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ctxsim.cli.common import EXIT_FAILED, err_console, info, print_json
from ctxsim.cli.options import json_option
from ctxsim.names import SMALL_DATASETS as SMALL
from ctxsim.names import canonical_dataset

data_app = typer.Typer(
    help="Fetch, prepare and check datasets. --root is the parent data directory (as the reference's --root).",
    no_args_is_help=True,
)


DatasetArg = Annotated[str, typer.Argument(help="cub, cars, sop, inat, inshop, fashion-mnist, digits, synthetic or icons.")]
RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Parent data directory (default $CTXSIM_DATA or ./data).")]
ArchiveOpt = Annotated[Optional[Path], typer.Option("--archive", help="Use this local archive instead of downloading.")]


def _dataset(name: str) -> str:
    return canonical_dataset(name)


def _root(root: Optional[Path]) -> Path:
    if root is not None:
        return root
    from ctxsim.data.datasets import default_root

    return Path(default_root())


class _Bars:
    """A rich progress display on stderr fed by the library's progress(done, total, label) callback."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=err_console, transient=False)
        self.tasks = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, done: int, total: Optional[int], label: str) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)


def _small_status(key: str, root: Optional[Path]) -> None:
    from ctxsim.data.prepare import SMALL_HINTS

    if key == "icons":
        info("icons: built from the installed icon themes, nothing to download: ctxsim data prepare icons")
        return
    if key == "fashion-mnist":
        from ctxsim.data.idx import find_fashion_dir

        d = find_fashion_dir(root)
        info(f"fashion-mnist: using the files in {d}")
    else:
        info(f"{key}: {SMALL_HINTS[key]}")


def download_cmd(dataset: DatasetArg, root: RootOpt = None, archive: ArchiveOpt = None) -> None:
    """Download a benchmark's archives into --root, resuming partial downloads (HTTP Range)."""

    key = _dataset(dataset)
    if key in SMALL:
        _small_status(key, root)
        return
    from ctxsim.data.prepare import download_dataset

    with _Bars() as bars:
        paths = download_dataset(key, _root(root), progress=bars, archive=archive)
    for p in paths:
        info(f"have {p}")


def prepare_cmd(dataset: DatasetArg, root: RootOpt = None, archive: ArchiveOpt = None,
                no_download: Annotated[bool, typer.Option("--no-download", help="Never touch the network.")] = False,
                workers: Annotated[int, typer.Option("--workers", help="Worker processes for the iNat resize or the icons rendering (0 = all "
                    "cores for icons, cores-1 for iNat).")] = 0,
                themes_dir: Annotated[Optional[list[Path]], typer.Option("--themes-dir", help="icons: look for icon themes here instead of the XDG data "
                    "dirs (repeatable).")] = None,
                ) -> None:
    """Download (or take --archive), extract, place the split files, resize iNat: the reference layout."""

    key = _dataset(dataset)
    if key == "icons":
        from ctxsim.data.icons import prepare_icons

        with _Bars() as bars:
            steps = prepare_icons(_root(root), search_dirs=themes_dir or None, workers=workers, progress=bars)
        for s in steps:
            info(s)
        info(f"next: ctxsim data verify icons --root {_root(root)}")
        return
    if key in SMALL:
        _small_status(key, root)
        return
    from ctxsim.data.prepare import prepare

    with _Bars() as bars:
        steps = prepare(key, _root(root), archive=archive, download_missing=not no_download, workers=workers,
                        progress=bars)
    for s in steps or ["nothing to do: already prepared"]:
        info(s)
    info(f"next: ctxsim data verify {key} --root {_root(root)}")


def verify_cmd(dataset: DatasetArg, root: RootOpt = None,
               custom_splits: Annotated[bool, typer.Option("--custom-splits", help="Do not compare split files and counts with the reference.")] = False,
               quick: Annotated[bool, typer.Option("--quick", help="Only check that files exist (no decoding).")] = False,
               workers: Annotated[int, typer.Option("--workers", help="Decode workers (0 = auto).")] = 0,
               as_json: json_option("Print the report as JSON on stdout.") = False,
               ) -> None:
    """Check split files (sha256, reference counts) and that every listed image exists and decodes."""

    key = _dataset(dataset)
    if key == "icons":
        from ctxsim.data.icons import verify_icons

        if quick:
            report = verify_icons(_root(root), decode=False)
        else:
            with _Bars() as bars:
                report = verify_icons(_root(root), decode=True, progress=bars)
    elif key in SMALL:
        from ctxsim.data.idx import small_counts

        if key == "synthetic":  # generated when loaded: nothing on disk to check
            info("synthetic: OK; generated at load time (no files)")
            if as_json:
                print_json({"dataset": key, "ok": True, "counts": {}})
            return
        n = small_counts(key, root)  # torch-free: labels read whole, image files by header and length
        rep = {"dataset": key, "ok": True, "counts": n}
        if key == "fashion-mnist" and (n["train"], n["test"]) != (30000, 5000):
            rep["ok"] = False
            rep["problems"] = {"count": [f"expected 30000 train / 5000 test images, got {n['train']} / {n['test']}"]}
        if as_json:
            print_json(rep)
        if not rep["ok"]:
            for m in rep["problems"]["count"]:
                err_console.print(f"[bold red]error:[/] {key}: {m}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FAILED)
        if not as_json:
            info(f"{key}: OK; train {n['train']} images, test {n['test']} images")
        return
    elif quick:
        from ctxsim.data.prepare import verify

        report = verify(key, _root(root), reference=not custom_splits, decode=False)
    else:
        from ctxsim.data.prepare import verify

        with _Bars() as bars:
            report = verify(key, _root(root), reference=not custom_splits, decode=True, workers=workers,
                            progress=bars)
    if as_json:
        print_json(report.to_json())
    lines = report.lines()
    for ln in lines[:-1]:
        err_console.print(f"[bold red]error:[/] {ln}", highlight=False, soft_wrap=True)
    if not as_json or not report.ok:
        info(lines[-1])
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Adds the ``data`` sub-app to the root app."""
    data_app.command("download")(download_cmd)
    data_app.command("prepare")(prepare_cmd)
    data_app.command("verify")(verify_cmd)
    app.add_typer(data_app, name="data")
