"""A run's configuration (JSON), pretty-printed and scrollable."""

from __future__ import annotations

import json
from typing import Optional

from rich.syntax import Syntax
from textual.containers import VerticalScroll
from textual.widgets import Static


class ConfigView(VerticalScroll):
    DEFAULT_CSS = """
    ConfigView { height: 1fr; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._text: Optional[str] = None
        self._body = Static("no configuration")

    def compose(self):
        yield self._body

    def show(self, config_json: Optional[str]) -> None:
        if config_json == self._text:
            return
        self._text = config_json
        if not config_json:
            self._body.update("no configuration")
            return
        try:
            pretty = json.dumps(json.loads(config_json), indent=2, sort_keys=True)
        except ValueError:
            pretty = config_json
        self._body.update(Syntax(pretty, "json", theme="ansi_dark", word_wrap=True))
