"""CLI commands: rtl (filled in by the area that owns it)."""

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""
