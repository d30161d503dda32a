from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from imago_api.deps import CatalogDep
from imago_api.schemas import HealthOut

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut, summary="Liveness and catalog reachability (no key needed)")
def health(catalog: CatalogDep):
    try:
        with catalog.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "degraded", "catalog": "unreachable"}, status_code=503)
    return HealthOut(status="ok", catalog="ok")
