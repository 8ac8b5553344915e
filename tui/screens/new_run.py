"""Modal: the new-run form; validates the config with the recipe and the preflight's config checks
(``ctxsim.train.preflight.check_config``, as ``ctxsim run``), then enqueues it; a config that could
never start shows the check's one line in the form and queues nothing.

A config that is already in the registry is not merged silently into that job: the form names the
job and offers to open it or to queue the same run with a new seed.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen

from ctxsim.errors import CtxsimError, one_line
from ctxsim.tui.widgets.new_run_form import NewRunForm

Result = Union[int, tuple[str, int], None]


class NewRunScreen(ModalScreen[Result]):
    """Dismisses with the new job id, ``("open", id)`` to open an existing job, or None (cancelled)."""

    VIEW_NAME = "New run"
    HELP = ("Choose a recipe (dataset, loss, resolution), optionally a name, a priority and key=value "
            "overrides. Enter moves to the next field; the Enqueue button or Ctrl+S queues the run.")
    HAS_TABLE = False
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Enqueue", show=False)]
    DEFAULT_CSS = """
    NewRunScreen { align: center middle; }
    """

    def __init__(self, prefill: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.prefill = prefill
        self.existing: Optional[dict[str, Any]] = None
        self._pending: Optional[tuple[dict, int]] = None

    def compose(self) -> ComposeResult:
        from ctxsim.names import DATASETS, LOSSES, RESOLUTIONS

        yield NewRunForm(list(DATASETS), list(LOSSES), list(RESOLUTIONS), self.prefill)

    def on_mount(self) -> None:
        self.query_one("#dataset").focus()

    @property
    def form(self) -> NewRunForm:
        return self.query_one(NewRunForm)

    def on_new_run_form_cancelled(self, _msg: NewRunForm.Cancelled) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self.form.action_submit()

    def on_new_run_form_submitted(self, msg: NewRunForm.Submitted) -> None:
        v = msg.values
        missing = [k for k in ("dataset", "loss", "resolution") if not v.get(k)]
        if missing:
            self.form.show_error("choose " + " and ".join(missing))
            return
        try:
            priority = int(v["priority"])
        except ValueError:
            self.form.show_error(f"priority must be an integer, got {v['priority']!r}")
            return
        self.form.show_error("validating…")
        self.run_worker(lambda: self._enqueue(v, priority), thread=True, exit_on_error=False)

    def on_new_run_form_open_existing(self, _msg: NewRunForm.OpenExisting) -> None:
        if self.existing is not None:
            self.dismiss(("open", self.existing["id"]))

    def on_new_run_form_new_seed(self, _msg: NewRunForm.NewSeed) -> None:
        if self._pending is None:
            return
        v, priority = self._pending
        self.form.show_error("queueing a new seed…")
        self.run_worker(lambda: self._enqueue(v, priority, new_seed=True), thread=True, exit_on_error=False)

    def _enqueue(self, v: dict, priority: int, new_seed: bool = False) -> None:
        """Thread: validate, look for the same config, enqueue (or say where it already is)."""
        from ctxsim.registry import history, jobs
        from ctxsim.tui.actions import build_config

        reg = self.app.reg  # type: ignore[attr-defined]
        call = self.app.call_from_thread
        try:
            overrides = v["overrides"]
            if new_seed:
                cfg = build_config(v["dataset"], v["loss"], int(v["resolution"]), overrides)
                used = history.used_seeds(reg, cfg.dataset, cfg.loss, int(v["resolution"])) | {cfg.seed}
                seed = next(s for s in range(max(used) + 1 if used else 1, 10**9) if s not in used)
                overrides = f"{overrides} seed={seed}".strip()
                call(self.form.set_overrides, overrides)
            cfg = build_config(v["dataset"], v["loss"], int(v["resolution"]), overrides)
            same = history.jobs_with_config(reg, cfg.config_hash())
            if same:
                job = same[0]
                self.existing, self._pending = job, (v, priority)
                what = f"#{job['id']}" + (f" {job['name']!r}" if job.get("name") else "")
                call(self.form.show_exists, f"this config is already job {what} ({job['status']}, seed "
                                            f"{job['seed']}): open it, or queue it again with a new seed")
                return
            jid = jobs.enqueue(reg, cfg, name=v["name"] or None, priority=priority,
                               tags=(self.prefill or {}).get("tags") or ())  # a clone keeps its job's tags
        except CtxsimError as e:
            call(self.form.show_error, one_line(e))
            return
        except Exception as e:  # noqa: BLE001 - a database error must not kill the form
            call(self.form.show_error, f"could not enqueue: {one_line(e)}")
            return
        call(self.dismiss, jid)
