"""``ctxsim run`` (train in the foreground with a progress bar) and ``ctxsim eval`` (R@K / MAP@R of a
saved model). Thin: build a RunConfig from the recipe and the options, call the library, print.

Exit codes: 0 done; 1 the run failed (details in <run-dir>/events.jsonl); 2 bad input; 4 no such
checkpoint; 130 stopped by Ctrl-C (a checkpoint is written: the same command resumes).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from ctxsim.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    console,
    err_console,
    fail,
    info,
    one_line,
    print_json,
)
from ctxsim.cli.options import DbOpt, DeviceOpt, RecipeOpt, ResolutionOpt, TrackOpt, json_option, track_names
from ctxsim.registry.states import JobStatus

JsonOpt = json_option("Print the result as JSON only (on stdout).")


# ---- the progress display: an event sink living in the CLI -----------------------------------------
class RichProgressSink:
    """Shows a run's events as a rich progress bar (steps over all epochs, epoch, loss, last R@1)
    on stderr, and prints one line per evaluation above it."""

    def __init__(self, console_=None, title: str = "train") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console_ or err_console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("R@1 {task.fields[r1]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.title = title
        self.task = None
        self.steps_per_epoch = 1

    def emit(self, event) -> None:
        d = event.data
        k = event.kind
        if k == "start":
            self.steps_per_epoch = max(int(d.get("steps_per_epoch") or 1), 1)
            total = int(d["epochs"]) * self.steps_per_epoch
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task(self.title, total=total, epoch=f"{d.get('start_epoch', 0)}/{d['epochs']}",
                                                   loss="-", r1="-")
            self.progress.update(self.task, total=total, completed=int(d.get("step") or 0))
            if d.get("resumed"):
                self.progress.console.print(f"resumed at epoch {d.get('start_epoch')} (step {d.get('step')})",
                                            highlight=False)
        elif self.task is None:
            return
        elif k == "step":
            total = self.progress.tasks[0].total
            self.progress.update(self.task, completed=int(d["step"]), loss=f"{float(d['loss']):.4f}",
                                 epoch=f"{d['epoch']}/{int(total // self.steps_per_epoch)}")
        elif k == "eval":
            m = d["metrics"]
            r1 = m.get("R@1")
            if r1 is not None:
                self.progress.update(self.task, r1=f"{100 * r1:.2f}")
            shown = "  ".join(f"{key} {100 * v:.2f}" for key, v in m.items())
            self.progress.console.print(f"epoch {d['epoch']}: {shown}", highlight=False)
        elif k == "stopped":
            self.progress.console.print(f"stopped at epoch {d['epoch']} step {d['step']}; checkpoint {d.get('checkpoint')}",
                                        highlight=False)
        elif k == "failed":
            self.progress.console.print(f"[red]failed:[/] {d.get('error')}", highlight=False)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[threading.Event]:
    """First Ctrl-C asks the run to stop after the current step (checkpointed); a second one aborts."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        err_console.print("stopping after this step (Ctrl-C again to abort)...", highlight=False)

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[threading.Event]:
    """Ctrl-C during a registry write (one transaction) is remembered and acted on once the write is
    over, so the caller can undo it instead of leaving it half-done; while the write still waits for
    another process's lock (nothing written yet) the wait ends at once with KeyboardInterrupt."""
    from ctxsim.registry.db import interrupt_lock_wait

    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.set()
        interrupt_lock_wait()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def metrics_table(metrics: dict[str, float], title: Optional[str] = "metrics"):
    """A rich table of retrieval metrics (values in percent)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("value (%)", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{100 * float(v):.2f}")
    return t


# ---- commands -----------------------------------------------------------------------------------------
def run(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="cub, cars, sop, inat, inshop, fashion-mnist, digits, synthetic.")],
    loss: Annotated[str, typer.Option("--loss", "-l", help="hybrid, contrastive, triplet, multisimilarity, ms_miner, proxy_anchor, proxy_nca, "
        "roadmap, smoothap, fastap, ntxent, normsoftmax.")],
    resolution: ResolutionOpt = None,
    recipe: RecipeOpt = None,
    root: Annotated[Optional[str], typer.Option("--root", help="Parent folder of the datasets.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key=value (repeatable), e.g. lr=1e-4, "
        "loss.lam=0.3, model.pooling=avg.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Number of epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    device: DeviceOpt = "auto",
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids for this run, e.g. 0,1 (several: DDP under torchrun, "
        "needs --detach and a worker).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Only queue the run for a worker (ctxsim worker) and print its job id.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="With --detach: skip the checks that depend on this machine (data, device, GPUs) for a "
        "worker elsewhere; the worker runs them before it trains.")] = False,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="Skip (and count) unreadable images instead of failing.")] = False,
    backbone_weights: Annotated[Optional[str], typer.Option(
        "--backbone-weights", help="Backbone weights: 'imagenet' (torchvision cache), a local ResNet-50 state dict .pth "
        "(air-gapped machines), or 'none'.")] = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="reference (the authors' code exactly; default for the paper datasets) or fixed "
        "(corrected behaviour; docs/profiles.md).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name (also names the run folder).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Tag (repeatable).")] = None,
    track: TrackOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder; an unfinished checkpoint there is resumed (default: "
        "runs/<name>-<config hash>, beside the registry).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over in a new folder even if an unfinished run of this config exists.")] = False,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Train a recipe now in the foreground (recorded in the registry, visible live in `ctxsim tui`),
    or queue it for a worker with --detach."""
    from ctxsim.cli.common import open_registry_or_exit
    from ctxsim.errors import CtxsimError

    gpu_ids = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if any(not g.isdigit() for g in gpu_ids):
        fail(f"--gpus expects GPU ids like 0,1; got {gpus!r}")
    if no_check and not detach:
        fail("--no-check applies to --detach only (a foreground run needs its data and device here)")
    if len(gpu_ids) > 1 and not detach:
        fail("several --gpus run under torchrun through a worker: add --detach and start `ctxsim worker --gpus ...`")
    weights = _weights_value(backbone_weights) if backbone_weights is not None else None
    from ctxsim.train.configure import configure
    from ctxsim.train.preflight import preflight

    cfg = configure(dataset, loss, resolution, root, sets, epochs, seed, device, name, tag,
                    skip_bad_images=skip_bad_images, backbone_weights=weights, profile=profile, recipe_family=recipe)
    if track is not None:
        cfg = cfg.with_overrides(track=track_names(track))
    preflight(cfg, device=device, gpus=gpu_ids, host=not (detach and no_check))  # before any job row

    from ctxsim.registry import jobs
    from ctxsim.runner.submit import resume_folder, submit_run, withdraw
    from ctxsim.train.recipes import recipe_provenance

    reg = open_registry_or_exit(db)
    rd = resume_folder(reg, cfg, run_dir, fresh)  # an unfinished run of this config is resumed
    try:
        with _ctrl_c_deferred() as interrupted:
            # after Ctrl-C the same command continues the same job (its id, history and curves)
            sub = submit_run(reg, cfg, rd, detach, name=name, tags=tag or [], n_gpus=len(gpu_ids))
        if interrupted.is_set():  # Ctrl-C while the write waited (e.g. for the lock): undo it, never half-done
            withdraw(reg, sub)
            fail("interrupted: nothing was queued", EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # while waiting for the registry lock, before anything was written
        fail("interrupted while waiting for the registry lock: nothing was queued", EXIT_INTERRUPTED)
    jid = sub.job_id
    if detach:
        if json_out:
            print_json({"id": jid, "status": JobStatus.QUEUED})
        else:
            info(f"queued job {jid} ({cfg.summary()}); start `ctxsim worker` to run it")
            console.print(str(jid), highlight=False)
        return

    from ctxsim.registry.queries import job_detail
    from ctxsim.runner.job import run_job_foreground

    rd = Path(job_detail(reg, jid)["run_dir"])
    info(f"job {jid}: {cfg.summary()} -> {rd}  ({recipe_provenance(cfg.dataset, cfg.loss, cfg.resolution, cfg.recipe)}; "
         f"convention {cfg.convention}, select {cfg.select})")
    sink = RichProgressSink(title=cfg.name or f"{cfg.dataset}/{cfg.loss}")
    try:
        with _ctrl_c_stops() as stop:
            result = run_job_foreground(reg, jid, extra_sink=sink, device=device, gpus=gpu_ids, should_stop=stop.is_set)
    except jobs.JobStateError as e:
        sink.close()
        fail(f"{one_line(e)} (a worker may be running this config: see `ctxsim ls`)", e.exit_code)
    except CtxsimError as e:
        sink.close()
        fail(one_line(e), e.exit_code)
    except KeyboardInterrupt:
        sink.close()
        fail(f"aborted; job {jid} is cancelled and its last checkpoint in {rd} can be resumed (`ctxsim retry {jid}`)",
             EXIT_INTERRUPTED)
    except Exception as e:  # a bug or a runtime failure: one line, details in events.jsonl
        sink.close()
        where = f" (traceback in {rd / 'events.jsonl'})" if (rd / "events.jsonl").is_file() else ""
        fail(f"job {jid} failed: {one_line(e, with_type=True)}{where}", EXIT_FAILED)
    sink.close()
    if json_out:
        print_json({"id": jid, **result.to_dict()})
    else:
        sel = f"{result.selected}" + (f" (best epoch {result.best_epoch}, chosen on the {result.selected_on} set)"
                                      if result.selected_on else f" (epoch {result.best_epoch})")
        console.print(f"job {jid} {cfg.summary()}: {result.status}; model: {sel}", highlight=False)
        console.print(metrics_table(result.metrics, title=None))
        if result.skipped_images:
            info(f"skipped {result.skipped_images} unreadable image(s) (--skip-bad-images; named in {rd / 'stdout.log'})")
        info(f"run folder: {rd}")
    if result.status == "stopped":
        info(f"stopped: run the same command (or `ctxsim retry {jid}` for a worker) to resume")
        raise typer.Exit(EXIT_INTERRUPTED)


def _weights_value(value: str) -> str:
    """``--backbone-weights``: imagenet / none, or a local file (made absolute; it must exist)."""
    if value.lower() in ("imagenet", "none"):
        return value.lower()
    p = Path(value).expanduser()
    if not p.is_file():
        fail(f"--backbone-weights: no such file {value!r} (give a ResNet-50 state dict .pth, 'imagenet' or 'none')")
    return str(p.absolute())


def eval_cmd(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A checkpoint.pt written by ctxsim run.")] = None,
    untrained: Annotated[bool, typer.Option("--untrained", help="Instead of a checkpoint: the recipe's trunk before its first step "
        "(pretrained weights if the recipe loads them, else random init at seed 0) on the test split; recorded once "
        "in the registry and shown as Δ untrained by compare.")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset (default: the run's).")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", "-l", help="--untrained: the recipe's loss (default hybrid; "
        "it changes nothing an untrained model computes but the recipe it comes from).")] = None,
    resolution: ResolutionOpt = None,
    recipe: RecipeOpt = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="--untrained: key=value on the recipe, e.g. "
        "model.arch=timm:convnext_tiny.")] = None,
    root: Annotated[Optional[str], typer.Option("--root", help="Parent folder of the datasets.")] = None,
    device: DeviceOpt = "auto",
    which: Annotated[Optional[str], typer.Option("--which", help="last or best weights (default: the run's selection).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Evaluation batch size.")] = None,
    grid: Annotated[Optional[Path], typer.Option("--grid", help="Also write a retrieval picture (PNG): queries and their top-K, "
        "hits green, misses red.")] = None,
    grid_k: Annotated[int, typer.Option("--grid-k", min=1, help="Results per query in the picture.")] = 8,
    grid_queries: Annotated[int, typer.Option("--grid-queries", min=1, help="Queries (rows) in the picture.")] = 8,
    json_out: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """R@K and MAP@R of a saved model on a dataset's test split (and a retrieval picture with --grid);
    with --untrained, of the recipe's trunk before training."""
    if untrained:
        _eval_untrained(checkpoint, dataset, loss, resolution, recipe, sets, root, device, json_out, db)
        return
    if checkpoint is None:
        fail("give a checkpoint (ctxsim eval runs/…/checkpoint.pt) or --untrained --dataset D")
    if not checkpoint.exists():
        fail(f"no such checkpoint: {checkpoint}", EXIT_NOT_FOUND)
    if which not in (None, "last", "best"):
        fail(f"--which must be last or best; got {which!r}")
    from ctxsim.train.evaluation import evaluate_checkpoint

    pic = None
    ev = evaluate_checkpoint(checkpoint, dataset, root, device, which, batch_size, return_embeddings=grid is not None)
    metrics, cfg = ev.metrics, ev.config
    if grid is not None:
        from ctxsim.report.grid import retrieval_grid

        pic = retrieval_grid(None, ev.data.query, grid, gallery=ev.data.gallery, k=grid_k,
                             n_queries=grid_queries, embeddings=ev.embeddings)
    if json_out:
        out = {"checkpoint": str(checkpoint), "dataset": cfg.dataset, "metrics": metrics}
        if pic is not None:
            out["grid"] = str(pic["path"])
        print_json(out)
    else:
        console.print(f"{checkpoint} on {cfg.dataset}", highlight=False)
        console.print(metrics_table(metrics, title=None))
    if pic is not None:
        info(f"wrote {pic['path']} ({pic['precision']:.0%} of the shown results are hits)")


def _eval_untrained(checkpoint, dataset, loss, resolution, recipe, sets, root, device, json_out, db) -> None:
    from ctxsim.baselines.untrained import untrained_baseline
    from ctxsim.cli.common import open_registry_or_exit
    from ctxsim.train.configure import configure

    if checkpoint is not None:
        fail("--untrained evaluates the recipe's trunk, not a checkpoint: drop the checkpoint argument")
    if dataset is None:
        fail("--untrained needs --dataset")
    cfg = configure(dataset, loss or "hybrid", resolution, root, sets, recipe_family=recipe)
    reg = open_registry_or_exit(db)
    with console.status(f"evaluating the untrained {cfg.model.arch} on {cfg.dataset}"):
        metrics, key, computed = untrained_baseline(reg, cfg, device)
    reg.dispose()
    fractions = {k: v / 100.0 for k, v in metrics.items()}
    if json_out:
        print_json({"dataset": cfg.dataset, "untrained": True, "arch": cfg.model.arch,
                    "backbone_weights": cfg.model.backbone_weights, "resolution": cfg.resolution, "key": key,
                    "computed": computed, "metrics": fractions})
        return
    how = "computed and recorded" if computed else "recorded earlier"
    console.print(f"untrained {cfg.model.arch} ({cfg.model.backbone_weights or 'random init'}) on {cfg.dataset}, "
                  f"{cfg.resolution} px: {how} (baseline {key})", highlight=False)
    console.print(metrics_table(fractions, title=None))


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
    app.command("run")(run)
    app.command("eval")(eval_cmd)
