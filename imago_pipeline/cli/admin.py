"""`imago admin`: clients and their first API key."""

from __future__ import annotations

from typing import Annotated

import typer

from imago_pipeline.cli.app import admin_app, console
from imago_pipeline.core.config import ImagoSettings


@admin_app.command("create-client")
def create_client(
    name: str,
    scopes: Annotated[str, typer.Option(help="Comma-separated: images:read, images:write, images:delete, "
                                             "ai:use, admin")] = "images:read,images:write,ai:use",
    plan: Annotated[str, typer.Option(help="Plan name (rate limit and default quota)")] = "free",
    quota_bytes: Annotated[int | None, typer.Option(help="Storage quota override, in bytes")] = None,
) -> None:
    """Create a client and print its first API key, once (only a hash is stored)."""
    from imago_pipeline.core.catalog import Catalog, ClientExists

    settings = ImagoSettings()
    if plan not in settings.plans:
        console.print(f"unknown plan {plan!r}; plans: {', '.join(sorted(settings.plans))}")
        raise typer.Exit(2)
    catalog = Catalog.connect(settings.catalog_url)
    try:
        tenant = catalog.clients.create(name, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                                       plan=plan, quota_bytes=quota_bytes)
    except ClientExists:
        console.print(f"a client named {name!r} exists; rotate its key with POST /auth/clients/{{id}}/rotate-key")
        raise typer.Exit(1) from None
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(2) from None
    key = catalog.clients.issue_key(tenant.id)
    console.print(f"client '{name}' (id {tenant.id}, plan {plan}, scopes {', '.join(tenant.scopes)})")
    console.print("this key is shown once, store it now:")
    typer.echo(key)
