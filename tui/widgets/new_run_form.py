"""The new-run form: dataset, loss, resolution, name, priority and key=value overrides.

Enter moves on between fields; only the Enqueue button (or Ctrl+S) submits. When the config is
already in the registry the form says so and offers to open that job or queue a new seed.
"""

from __future__ import annotations

from typing import Any, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select


class NewRunForm(VerticalScroll):
    """Posts ``Submitted`` (field values), ``Cancelled``, ``OpenExisting`` and ``NewSeed``."""

    BINDINGS = [Binding("ctrl+s", "submit", "Enqueue")]
    DEFAULT_CSS = """
    NewRunForm { height: auto; max-height: 100%; width: 100%; max-width: 84; padding: 0 1;
                 border: round $accent; background: $surface; }
    NewRunForm .row { height: auto; }
    NewRunForm .row Select { width: 1fr; }
    NewRunForm .row Input { width: 1fr; }
    NewRunForm #priority { width: 12; }
    NewRunForm Label { padding: 0 1; }
    NewRunForm #error { color: $error; height: auto; }
    NewRunForm #exists { height: auto; display: none; }
    NewRunForm #exists.-shown { display: block; }
    NewRunForm #buttons { height: auto; align-horizontal: right; }
    NewRunForm Button { margin-left: 1; }
    """

    class Submitted(Message):
        def __init__(self, values: dict[str, Any]) -> None:
            super().__init__()
            self.values = values

    class Cancelled(Message):
        pass

    class OpenExisting(Message):
        pass

    class NewSeed(Message):
        pass

    def __init__(self, datasets: list[str], losses: list[str], resolutions: list[int],
                 prefill: Optional[dict[str, Any]] = None, **kw) -> None:
        super().__init__(**kw)
        self._datasets, self._losses, self._resolutions = datasets, losses, resolutions
        self._prefill = prefill or {}

    def compose(self) -> ComposeResult:
        p = self._prefill
        yield Label("[b]New run[/b] (queued for a worker) · Ctrl+S enqueues · Esc cancels")
        with Horizontal(classes="row"):
            ds = p.get("dataset") if p.get("dataset") in self._datasets else Select.NULL
            yield Select([(d, d) for d in self._datasets], value=ds, prompt="dataset", id="dataset")
            lo = p.get("loss") if p.get("loss") in self._losses else ("hybrid" if "hybrid" in self._losses else Select.NULL)
            yield Select([(x, x) for x in self._losses], value=lo, prompt="loss", id="loss")
            res = p.get("resolution") if p.get("resolution") in self._resolutions else self._resolutions[-1]
            yield Select([(str(r), r) for r in self._resolutions], value=res, allow_blank=False, id="resolution")
        yield Label("Name and priority (higher runs first)")
        with Horizontal(classes="row"):
            yield Input(value=p.get("name") or "", placeholder="name (optional)", id="name")
            yield Input(value=str(p.get("priority", 0)), placeholder="0", id="priority", type="integer")
        yield Label("Overrides: key=value, space separated")
        yield Input(value=p.get("overrides") or "", placeholder="none: the recipe as published (e.g. lr=1e-4)",
                    id="overrides")
        yield Label("", id="error")
        with Horizontal(id="exists"):
            yield Button("Open it", id="open-existing")
            yield Button("Queue a new seed", id="new-seed", variant="warning")
        with Horizontal(id="buttons"):
            yield Button("Cancel", id="cancel")
            yield Button("Enqueue", id="enqueue", variant="primary")

    def values(self) -> dict[str, Any]:
        def sel(i: str):
            v = self.query_one(i, Select).value
            return None if v is Select.NULL else v

        return {
            "dataset": sel("#dataset"), "loss": sel("#loss"), "resolution": sel("#resolution"),
            "name": self.query_one("#name", Input).value.strip(),
            "overrides": self.query_one("#overrides", Input).value.strip(),
            "priority": self.query_one("#priority", Input).value.strip() or "0",
        }

    def show_error(self, text: str) -> None:
        self.query_one("#error", Label).update(text)
        self.show_exists(False)

    def show_exists(self, text: Optional[str]) -> None:
        """The config is already a job: say so and offer Open / New seed (``text`` None or False hides)."""
        box = self.query_one("#exists")
        box.set_class(bool(text), "-shown")
        if text:
            self.query_one("#error", Label).update(text)
            self.query_one("#open-existing", Button).focus()

    def set_overrides(self, text: str) -> None:
        self.query_one("#overrides", Input).value = text

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self.values()))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        msg = {"enqueue": lambda: self.Submitted(self.values()), "open-existing": self.OpenExisting,
               "new-seed": self.NewSeed}.get(event.button.id or "", self.Cancelled)
        self.post_message(msg())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a field moves to the next one; it never submits."""
        event.stop()
        self.screen.focus_next()
