"""The `imago` command: the Typer app every command module registers on."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Imago image-enrichment platform.")
admin_app = typer.Typer(no_args_is_help=True, help="Tenants and API keys.")
app.add_typer(admin_app, name="admin")
console = Console(stderr=True)
