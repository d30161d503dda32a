"""Liveness for load balancers, and a detailed check of every dependency for operators."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from imago_api.deps import BlobStoreDep, CatalogDep, SettingsDep, get_principal
from imago_api.errors import AUTHENTICATED, responses
from imago_api.schemas import HealthOut

router = APIRouter(tags=["operations"])
DAEMON_STALE_S = 60  # Dagster's daemons beat every 20-30 s


@router.get("/health", response_model=HealthOut, summary="Liveness and catalog reachability (no key needed)",
            responses={503: {"model": HealthOut, "description": "The catalog database cannot be reached"}})
def health(catalog: CatalogDep):
    try:
        with catalog.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "degraded", "catalog": "unreachable"}, status_code=503)
    return HealthOut(status="ok", catalog="ok")


class CheckResult(BaseModel):
    status: str  # ok | degraded | error
    latency_ms: float
    detail: str


class DetailedHealthOut(BaseModel):
    status: str
    failed: list[str]  # the dependencies in error
    checks: dict[str, CheckResult]


def _timed(check: Callable[[], tuple[str, str]]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, detail = check()
    except Exception as exc:  # a check reports its failure; it never fails the endpoint
        status, detail = "error", f"{type(exc).__name__}: {exc}"[:300]
    return CheckResult(status=status, latency_ms=round((time.perf_counter() - started) * 1000, 1), detail=detail)


@router.get("/health/detailed", response_model=DetailedHealthOut, dependencies=[Depends(get_principal)],
            summary="Catalog, Dagster, blob store, Tesseract and production model, each with latency (any API "
                    "key, as the original service answered it)",
            responses={**responses(*AUTHENTICATED),
                       503: {"model": DetailedHealthOut, "description": "A dependency is in error: `failed` names "
                             "it (or, with a client's key, `catalog_unavailable`: the key cannot be checked)"}})
def health_detailed(request: Request, catalog: CatalogDep, blobs: BlobStoreDep, settings: SettingsDep):
    def check_catalog():
        with catalog.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok", catalog.engine.dialect.name

    def check_dagster():
        instance = request.app.state.dagster_instance()
        runs = instance.get_runs_count()
        beats = {b.daemon_type: b.timestamp for b in instance.get_daemon_heartbeats().values()}
        now = datetime.now(UTC).timestamp()
        sensor_beat = beats.get("SENSOR")
        if sensor_beat is None or now - sensor_beat > DAEMON_STALE_S:
            return "degraded", f"{runs} runs; the sensor daemon is not running (uploads wait until it is)"
        return "ok", f"{runs} runs; daemons alive: {', '.join(sorted(beats))}"

    def check_blobs():
        key = f"health/probe-{uuid.uuid4().hex}"
        blobs.put(key, b"ok")
        try:
            if blobs.get(key) != b"ok":
                return "error", "read back different bytes"
        finally:
            blobs.delete(key)
        return "ok", type(blobs).__name__

    def check_tesseract():
        import pytesseract

        version = pytesseract.get_tesseract_version()
        missing = set(settings.ocr_languages.split("+")) - set(pytesseract.get_languages(config=""))
        if missing:
            return "error", f"tesseract {version} lacks the languages {', '.join(sorted(missing))}"
        return "ok", f"tesseract {version} ({settings.ocr_languages})"

    def check_model():
        from training.registry import open_model_store

        model = open_model_store(catalog, blobs, settings.models_dir).production()
        if not blobs.exists(model.artifact_key):
            return "error", f"{model.version}: artifact missing from the blob store"
        accuracy = (model.metrics or {}).get("accuracy")
        return "ok", f"{model.version}" + (f" (accuracy {accuracy:.3f})" if accuracy is not None else "")

    checks = {name: _timed(check) for name, check in [
        ("catalog", check_catalog), ("dagster", check_dagster), ("blob_store", check_blobs),
        ("tesseract", check_tesseract), ("production_model", check_model)]}
    statuses = {c.status for c in checks.values()}
    overall = "error" if "error" in statuses else "degraded" if "degraded" in statuses else "ok"
    body = DetailedHealthOut(status=overall, failed=sorted(n for n, c in checks.items() if c.status == "error"),
                             checks=checks)
    return JSONResponse(body.model_dump(), status_code=503 if overall == "error" else 200)
