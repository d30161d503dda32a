"""`imago similar`, `imago duplicates`: a tenant's stored images that look alike (from their embeddings)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from imago_pipeline.cli.app import app, console
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.embedding.similarity import DUPLICATE_THRESHOLD

TenantOption = Annotated[str | None, typer.Option("--tenant", help="Tenant name (default: IMAGO_DEFAULT_TENANT)")]


def _tenant(name: str | None):
    from imago_pipeline.core.catalog import Catalog

    settings = ImagoSettings()
    catalog = Catalog.connect(settings.catalog_url)
    tenant = catalog.clients.by_name(name or settings.default_tenant)
    if tenant is None:
        typer.echo(f"no tenant named {name or settings.default_tenant!r}", err=True)
        raise typer.Exit(2)
    return catalog.for_tenant(tenant.id)


@app.command()
def similar(
    image_id: int,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many images")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """The tenant's images most like IMAGE_ID, with their cosine similarity (1: the same picture)."""
    from imago_pipeline.core.similar_images import NoEmbedding
    from imago_pipeline.core.similar_images import similar as find_similar

    scoped = _tenant(tenant)
    if scoped.get_image(image_id) is None:
        typer.echo(f"imago similar: no image {image_id} for this tenant", err=True)
        raise typer.Exit(2)
    try:
        matches = find_similar(scoped, image_id, limit=limit)
    except NoEmbedding:
        typer.echo(f"imago similar: image {image_id} has no embedding yet", err=True)
        raise typer.Exit(1) from None
    names = {i.id: i.original_name for i in scoped.get_images([m.image_id for m in matches])}
    if as_json:
        for m in matches:
            typer.echo(json.dumps({"image_id": m.image_id, "original_name": names.get(m.image_id), "score": m.score}))
        return
    table = Table(title=f"Images like {image_id}", title_justify="left")
    for column in ("id", "name", "similarity"):
        table.add_column(column)
    for m in matches:
        table.add_row(str(m.image_id), names.get(m.image_id, ""), f"{m.score:.3f}")
    console.print(table)


@app.command()
def duplicates(
    tenant: TenantOption = None,
    threshold: Annotated[float, typer.Option(min=0.9, max=1.0, help="Fingerprint correlation that makes two "
                                                                 "images the same picture")] = DUPLICATE_THRESHOLD,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per group")] = False,
) -> None:
    """Groups of near-identical images (re-encoded, resized, converted copies of one picture)."""
    from imago_pipeline.core.similar_images import duplicates as find_duplicates

    scoped = _tenant(tenant)
    groups = find_duplicates(scoped, threshold=threshold)
    names = {i.id: i.original_name for i in scoped.get_images([i for g in groups for i in g.image_ids])}
    for group in groups:
        if as_json:
            typer.echo(json.dumps({"image_ids": group.image_ids, "min_score": group.min_score,
                                   "names": [names.get(i) for i in group.image_ids]}))
        else:
            typer.echo(f"{group.min_score:.3f}\t" + "\t".join(f"{i}:{names.get(i, '')}" for i in group.image_ids))
    if not as_json:
        console.print(f"{len(groups)} group(s) at fingerprint correlation ≥ {threshold}")
