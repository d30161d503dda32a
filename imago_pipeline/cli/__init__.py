"""`imago`: the command line for operators and analysts, one module per command group.

    images.py       exif, ocr, classify: one file at a time, nothing stored
    similar.py      similar, duplicates: a tenant's stored images that look alike
    ingest.py       ingest, demo: a folder registered and processed in this process
    analytics.py    sql, compact: the lake and the SQL models with DuckDB
    maintenance.py  purge, reprocess
    admin.py        admin create-client
    serve.py        serve: the Dagster UI and the API together, supervised
    worker.py       worker: a Celery worker of the distributed executor
"""

from __future__ import annotations

from typing import Annotated

import typer

from imago_pipeline.cli import (  # noqa: F401  (they register commands)
    admin,
    analytics,
    images,
    ingest,
    maintenance,
    similar,
    worker,
)
from imago_pipeline.cli.app import app

__all__ = ["app"]


@app.command()
def serve(
    host: str = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="API port")] = 8000,
    dagster_port: Annotated[int, typer.Option(help="Dagster UI port")] = 3000,
) -> None:
    """Run the Dagster UI (webserver + daemon) and the API until Ctrl-C."""
    from imago_pipeline.cli.serve import serve as run

    raise typer.Exit(run(host, api_port, dagster_port))
