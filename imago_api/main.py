"""The FastAPI application: `uvicorn imago_api.main:app`, or `create_app(settings)` in tests."""

from __future__ import annotations

from fastapi import FastAPI

from imago_api.errors import install_error_handlers
from imago_api.routes import classifier, health, images
from imago_pipeline.catalog import Catalog
from imago_pipeline.config import ImagoSettings
from imago_pipeline.storage.blobs import LocalBlobStore


def create_app(settings: ImagoSettings | None = None) -> FastAPI:
    settings = settings or ImagoSettings()
    app = FastAPI(
        title="Imago",
        version="0.1.0",
        description="Upload images and query what the pipeline extracted. Authenticate with `X-API-Key`; "
        "every image is visible only to its own tenant.",
    )
    app.state.settings = settings
    app.state.catalog = Catalog.connect(settings.catalog_url)
    app.state.blobs = LocalBlobStore(settings.blob_root)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(classifier.router)
    return app


