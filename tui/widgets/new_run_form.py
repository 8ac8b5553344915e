"""The new-run form: dataset, loss, resolution, name, priority and key=value overrides."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, Select


class NewRunForm(Vertical):
    """Posts ``NewRunForm.Submitted`` with the field values; shows errors via ``show_error``."""

    DEFAULT_CSS = """
    NewRunForm { height: auto; width: 84; padding: 1 2; border: thick $accent; background: $surface; }
    NewRunForm Label { margin-top: 1; }
    NewRunForm .row { height: auto; }
    NewRunForm .row Select { width: 1fr; }
    NewRunForm #error { color: $error; height: auto; margin-top: 1; }
    NewRunForm #buttons { height: auto; margin-top: 1; align-horizontal: right; }
    NewRunForm Button { margin-left: 2; }
    """

    class Submitted(Message):
        def __init__(self, values: dict[str, Any]) -> None:
            super().__init__()
            self.values = values

    class Cancelled(Message):
        pass

    def __init__(self, datasets: list[str], losses: list[str], resolutions: list[int], **kw) -> None:
        super().__init__(**kw)
        self._datasets, self._losses, self._resolutions = datasets, losses, resolutions

    def compose(self) -> ComposeResult:
        yield Label("[b]New run[/b] (queued for a worker)")
        with Horizontal(classes="row"):
            yield Select([(d, d) for d in self._datasets], prompt="dataset", id="dataset")
            yield Select([(x, x) for x in self._losses], value="hybrid" if "hybrid" in self._losses else Select.NULL,
                         prompt="loss", id="loss")
            yield Select([(str(r), r) for r in self._resolutions], value=self._resolutions[-1],
                         allow_blank=False, id="resolution")
        yield Label("Name (optional)")
        yield Input(placeholder="e.g. cub-hybrid-baseline", id="name")
        yield Label("Overrides: key=value … (e.g. epochs=2 lr=1e-4)")
        yield Input(placeholder="epochs=2", id="overrides")
        yield Label("Priority (higher runs first)")
        yield Input(value="0", id="priority", type="integer")
        yield Label("", id="error")
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

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "enqueue":
            self.post_message(self.Submitted(self.values()))
        else:
            self.post_message(self.Cancelled())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self.values()))
