"""The bottom key bar: the current view's keys in order, always keeping Help, Search and Quit.

Replaces Textual's Footer, which cuts the last keys (Quit among them) on a narrow terminal: here
the optional keys are dropped first and a click on a key runs its action.
"""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual import events
from textual.widget import Widget

from ctxsim.tui.bindings import ESSENTIAL_ACTIONS

Item = tuple  # (key shown, description, action, the node that defines it)


def fit_keys(items: list[Item], width: int, essential=ESSENTIAL_ACTIONS) -> list[Item]:
    """The items shown in ``width`` cells: every essential one, then the others in order while they fit."""
    def w(item: Item) -> int:
        return len(item[0]) + len(item[1]) + 4  # " key " + " desc "

    used = sum(w(i) for i in items if i[2] in essential)
    keep = set()
    for idx, item in enumerate(items):
        if item[2] in essential:
            keep.add(idx)
        elif used + w(item) <= width:
            keep.add(idx)
            used += w(item)
    return [item for idx, item in enumerate(items) if idx in keep]


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $footer-background; color: $footer-foreground; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._spans: list[tuple[int, int, Item]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, lambda _s: self.refresh())

    def items(self) -> list[Item]:
        screen = self.screen
        stack = self.app.screen_stack
        depth = stack.index(screen) + 1 if screen in stack else len(stack)
        out: list[Item] = []
        seen: set[str] = set()
        # every shown binding along the focus chain (a focused table's own hidden binding of the
        # same key, like DataTable's enter, does not hide the screen's)
        keys: set[str] = set()
        for ns, bindings in screen._modal_binding_chain:
            for key, binding in bindings:
                if not binding.show or binding.action in seen or key in keys:
                    continue
                if self.app._check_action_state(binding.action, ns) is not True:
                    continue
                seen.add(binding.action)
                keys.add(key)
                desc = binding.description
                if binding.action == "back":
                    desc = "Quit" if depth <= 2 else "Back"
                out.append((self.app.get_key_display(binding), desc, binding.action, ns))
        if any(i[2] == "app.pop_screen" for i in out):  # Esc already says Back: q need not
            out = [i for i in out if i[2] != "back"]
        # help first, quit/back last, the view's own keys in between
        out.sort(key=lambda i: 0 if i[2].endswith("help") else (2 if i[2] in ("back", "app.pop_screen") else 1))
        return out

    def render(self) -> Text:
        t = Text(no_wrap=True, overflow="crop")
        self._spans = []
        for item in fit_keys(self.items(), max(1, self.size.width)):
            start = len(t)
            t.append(f" {item[0]} ", style="bold reverse")
            t.append(f" {item[1]} ")
            self._spans.append((start, len(t), item))
        return t

    @property
    def shown(self) -> list[str]:
        """The descriptions on the bar now (tests)."""
        return [item[1] for _s, _e, item in self._spans]

    def item_at(self, x: int) -> Optional[Item]:
        for start, end, item in self._spans:
            if start <= x < end:
                return item
        return None

    async def on_click(self, event: events.Click) -> None:
        item = self.item_at(event.x)
        if item is not None:
            await self.app.run_action(item[2], item[3])

    def on_resize(self, _event: events.Resize) -> None:
        self.refresh()
