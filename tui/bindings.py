"""App-wide key bindings (each screen adds its own; the footer lists what applies)."""

from textual.binding import Binding

APP_BINDINGS = [
    Binding("q", "quit", "Quit"),
    Binding("ctrl+r,f5", "refresh_now", "Refresh", show=False),
    Binding("w", "queue", "Queue/workers", show=False),
    Binding("n", "new_run", "New run", show=False),
]
