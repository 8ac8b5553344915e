"""App-wide key bindings (each screen adds its own; the key bar lists what applies).

``q`` goes back one level and quits only from the runs table; ``?`` shows the keys of the current
view; every binding with a description is also a command in the palette (Ctrl+P, or ``:``).
"""

from textual.binding import Binding

APP_BINDINGS = [
    Binding("question_mark,f1", "help", "Help", key_display="?"),
    Binding("q", "back", "Quit"),
    Binding("escape", "cancel_write", "Cancel the waiting write", show=False, priority=True),
    Binding("ctrl+r,f5", "refresh_now", "Refresh", show=False),
    Binding("w", "queue", "Queue/workers", show=False),
    Binding("T", "studies", "Tuning studies", show=False),
    Binding("n", "new_run", "New run", show=False),
    Binding("colon", "command_palette", "Command palette", show=False),  # k9s habit: ':' then a command
]

# actions the key bar always keeps, however narrow the terminal
ESSENTIAL_ACTIONS = ("help", "app.help", "search", "back", "app.back", "app.pop_screen", "cancel")

# keys shared by every table (KeyedTable), listed in the help screen
TABLE_KEYS = (
    ("↑/k ↓/j", "previous / next row"),
    ("g/Home G/End", "first / last row"),
    ("PgUp PgDn", "page up / down"),
    ("← →", "scroll the columns (the ID column stays)"),
)
