"""`imago worker`: a Celery worker for the distributed executor (`IMAGO_EXECUTOR=celery`)."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from imago_pipeline.cli.app import app
from imago_pipeline.core.config import ImagoSettings


@app.command()
def worker(
    name: Annotated[str, typer.Option(help="This worker's name in the run's events (name@host)")] = "",
    loglevel: Annotated[str, typer.Option(help="Celery's log level")] = "INFO",
) -> None:
    """Execute the steps of `process_images` runs submitted to the broker (IMAGO_CELERY_BROKER_URL), one at a
    time, each over IMAGO_WORKERS processes, until stopped. Needs what a run needs: the catalog and
    Dagster's Postgres (DAGSTER_HOME), blobs and the lake on S3 or a shared volume."""
    from imago_pipeline.defs.execution import run_worker

    run_worker(ImagoSettings(), name or socket.gethostname(), loglevel=loglevel)
