"""Modal: the new-run form; validates the config with the recipe, then enqueues it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen

from ctxsim.errors import CtxsimError
from ctxsim.tui.widgets.new_run_form import NewRunForm


class NewRunScreen(ModalScreen[int | None]):
    """Dismisses with the new job id, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    NewRunScreen { align: center middle; }
    """

    def compose(self) -> ComposeResult:
        from ctxsim import RESOLUTIONS
        from ctxsim.train.recipes import DATASETS, LOSS_NAMES

        yield NewRunForm(list(DATASETS), list(LOSS_NAMES), list(RESOLUTIONS))

    def on_mount(self) -> None:
        self.query_one("#dataset").focus()

    def on_new_run_form_cancelled(self, _msg: NewRunForm.Cancelled) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_new_run_form_submitted(self, msg: NewRunForm.Submitted) -> None:
        v = msg.values
        form = self.query_one(NewRunForm)
        missing = [k for k in ("dataset", "loss", "resolution") if not v.get(k)]
        if missing:
            form.show_error("choose " + " and ".join(missing))
            return
        try:
            priority = int(v["priority"])
        except ValueError:
            form.show_error(f"priority must be an integer, got {v['priority']!r}")
            return
        form.show_error("validating…")
        self.run_worker(lambda: self._enqueue(v, priority), thread=True, exit_on_error=False)

    def _enqueue(self, v: dict, priority: int) -> None:
        from ctxsim.tui.actions import enqueue_run

        try:
            jid = enqueue_run(self.app.reg, v["dataset"], v["loss"], int(v["resolution"]), v["overrides"],  # type: ignore[attr-defined]
                              name=v["name"] or None, priority=priority)
        except CtxsimError as e:
            self.app.call_from_thread(self.query_one(NewRunForm).show_error, str(e))
            return
        except Exception as e:  # noqa: BLE001 - a database error must not kill the form
            self.app.call_from_thread(self.query_one(NewRunForm).show_error,
                                      f"could not enqueue: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return
        self.app.call_from_thread(self.dismiss, jid)
