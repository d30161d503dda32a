"""The web page (Jinja2, as in the original cats-and-dogs app): upload, watch, read, give feedback.

The page itself needs no key; it asks for one and calls the same API as everyone else, so it can do
nothing the key cannot.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from imago_api.deps import SettingsDep
from imago_pipeline.core.enrichment.decode import ACCEPTED_MEDIA_TYPES

HERE = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=HERE / "static")
router = APIRouter(tags=["web"])

# The page loads only its own script and style; images may come from a presigned S3 URL.
CSP = ("default-src 'self'; img-src 'self' data: https:; script-src 'self'; style-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@router.get("/", response_class=HTMLResponse, summary="The web page (no key needed to load it; it asks for one)")
def index(request: Request, settings: SettingsDep) -> HTMLResponse:
    response = templates.TemplateResponse(request, "index.html", {
        "max_mb": settings.max_upload_bytes // (1024 * 1024),
        "accepted": ", ".join(t.split("/")[1].upper() for t in ACCEPTED_MEDIA_TYPES),
    })
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
