"""CLI commands (module filled by its owner; see cli/main.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds this module's commands to the root app."""
