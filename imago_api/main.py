"""The FastAPI application: `uvicorn --factory imago_api.main:create_app`, or `create_app(settings)` in tests."""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from imago_api.errors import install_error_handlers
from imago_api.events import ProgressFeed
from imago_api.metrics import ApiMetrics
from imago_api.observability import configure_logging, install_request_middleware
from imago_api.ratelimit import RateLimiter
from imago_api.routes import ai, classifier, clients, files, health, images, web
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import UploadRegistrar
from imago_pipeline.core.stores.blobs import build_blob_store
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_files import lake_files_for
from imago_pipeline.core.stores.signing import UrlSigner, load_or_create_secret

DESCRIPTION = """Upload images and query what the pipeline extracted.

Authenticate with the `X-API-Key` header. Each route names the scope it needs (`images:read`, `images:write`,
`images:delete`, `ai:use`, `admin`); a key without it gets 403 naming the scope. Every image is visible only
to its own client: another client's image id answers 404. Requests are rate-limited per client by plan
(429 with `Retry-After`). Errors are `{"error": {"code", "message"}}`.
"""


def create_app(settings: ImagoSettings | None = None) -> FastAPI:
    settings = settings or ImagoSettings()
    configure_logging(settings.log_format)
    app = FastAPI(title="Imago", version="0.2.0", description=DESCRIPTION, lifespan=_lifespan)
    app.state.settings = settings
    app.state.catalog = Catalog.open(settings.catalog_url)  # the API starts (unhealthy) with the database down
    app.state.catalog.clients.remember_s = settings.auth_remember_s
    app.state.blobs = build_blob_store(settings)
    app.state.lake = Lake(lake_files_for(settings))
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret is not None else ""
    secret = secret or load_or_create_secret(settings.resolved_home / "signing.key")
    app.state.signer = UrlSigner(secret)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_storage, settings.plans)
    app.state.metrics = ApiMetrics(app.state.catalog)
    app.state.dagster_instance = _lazy_dagster_instance(settings)
    app.state.progress_feed = ProgressFeed(app.state.catalog, settings.events_poll_s)
    app.state.registrar = UploadRegistrar(app.state.catalog, app.state.blobs)
    install_error_handlers(app)
    install_request_middleware(app)
    for module in (web, health, images, files, classifier, clients, ai):
        app.include_router(module.router)
    app.mount("/static", web.static_files, name="static")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    _end_streams_on_stop(app)
    yield
    await app.state.progress_feed.close()
    await asyncio.to_thread(app.state.registrar.close)  # the uploads already accepted are registered


def _end_streams_on_stop(app: FastAPI) -> None:
    """On SIGTERM or SIGINT, end the event streams before uvicorn's graceful shutdown waits for them.

    Why: uvicorn waits for open responses before it stops, and an event stream only ends with its image;
    each open stream held a stop for the whole grace period, then was cut mid-response (an error logged
    for each). Chained to uvicorn's own handlers, which it installs before the lifespan starts and restores
    after (only in the main thread, where signals can be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(number)

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(app.state.progress_feed.end_streams)
            if callable(previous):
                previous(signum, frame)

        signal.signal(number, handler)


def _lazy_dagster_instance(settings: ImagoSettings):
    """The Dagster instance the pipeline uses (same DAGSTER_HOME), opened on first need: most requests never
    touch it, and importing Dagster costs a second."""
    lock, holder = threading.Lock(), []

    def get():
        with lock:
            if not holder:
                import dagster as dg

                from imago_pipeline.dagster_instance import prepare_dagster_home

                holder.append(dg.DagsterInstance.from_config(str(prepare_dagster_home(settings))))
            return holder[0]

    return get
