"""Feedback on classifications, synchronous prediction, and the metrics endpoint."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from imago_api.deps import (
    BlobStoreDep,
    CatalogDep,
    ImageId,
    PrincipalDep,
    SettingsDep,
    TenantDep,
    one_file,
    require_scope,
)
from imago_api.errors import AUTHENTICATED, UPLOAD_STATUS, ApiError, InvalidUpload, NotFound, Unavailable, responses
from imago_pipeline.core.catalog.tenant import ContradictoryFeedback
from imago_pipeline.core.classifier import classify
from imago_pipeline.core.embedding.head import HeadFormatError
from imago_pipeline.core.enrichment.decode import InvalidImage, inspect_image
from imago_pipeline.core.stores.blobs import BlobNotFound

router = APIRouter(tags=["classification"])


class FeedbackIn(BaseModel):
    correct: bool = Field(description="Whether the image's current classification is right")
    label: Literal["cat", "dog", "other"] | None = Field(
        default=None, description="What the image shows: required when `correct` is false (`other`: neither a "
        "cat nor a dog)")


class FeedbackOut(BaseModel):
    id: int
    image_id: int
    correct: bool
    label: str | None
    predicted_label: str | None
    model_version: str | None


class PredictionOut(BaseModel):
    label: str = Field(description="`cat`, `dog`, or `other` (neither)")
    probability: float
    probabilities: dict[str, float] = Field(description="Every label's probability")
    model_version: str
    latency_ms: float


@router.post("/images/{image_id}/feedback", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED,
             dependencies=[require_scope("images:write")], responses=responses(*AUTHENTICATED, 404, 409),
             summary="Say whether the classification was right (scope images:write)")
def give_feedback(image_id: ImageId, body: FeedbackIn, tenant: TenantDep, request: Request) -> FeedbackOut:
    """Stored with its time (kept for the feedback retention period) and used by the next retraining."""
    if tenant.get_image(image_id) is None:
        raise NotFound(f"image {image_id} not found")
    if tenant.get_classification(image_id) is None and body.label is None:
        raise ApiError("the image is not classified yet: give the true `label`", code="not_classified",
                       status_code=409)
    if not body.correct and body.label is None:
        raise ApiError("say what the image shows: `label` is `cat`, `dog` or `other`", code="label_required",
                       status_code=422)
    try:
        row = tenant.add_feedback(image_id, correct=body.correct, label=body.label)
    except ContradictoryFeedback as exc:
        raise ApiError(str(exc), code="contradictory_feedback", status_code=422) from exc
    request.app.state.metrics.feedback.labels(row.model_version or "none", "agree" if row.correct else "disagree").inc()
    return FeedbackOut(id=row.id, image_id=image_id, correct=row.correct, label=row.label,
                       predicted_label=row.predicted_label, model_version=row.model_version)


@router.post("/api/predict", response_model=PredictionOut, dependencies=[require_scope("ai:use"), Depends(one_file)],
             responses=responses(*AUTHENTICATED, 400, 413, 415),
             summary="Classify an uploaded image without storing it (scope ai:use)")
def predict(request: Request, principal: PrincipalDep, catalog: CatalogDep, blobs: BlobStoreDep, settings: SettingsDep,
            file: Annotated[UploadFile, File(description="The image")]) -> PredictionOut:
    """`cat`, `dog` or `other`, from the same backbone and production head as the pipeline. Only inference
    metadata is logged (time, outcome, latency, model version); never the image."""
    from training.registry import open_model_store

    metrics = request.app.state.metrics
    started = time.perf_counter()
    data = file.file.read(settings.max_upload_bytes + 1)
    registry = open_model_store(catalog, blobs, settings.models_dir)
    model = registry.production()
    try:
        inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        model, answers = classify([data], registry, max_pixels=settings.max_pixels)
        prediction = answers[0].prediction
    except (HeadFormatError, BlobNotFound) as exc:  # the production artifact is missing or unreadable
        raise Unavailable(f"the production model {model.version} cannot be read ({type(exc).__name__}); "
                          "an operator must promote a readable version", code="model_unavailable") from exc
    except InvalidImage as exc:
        latency = (time.perf_counter() - started) * 1000
        catalog.feedback.log_inference(tenant_id=principal.tenant_id, success=False, latency_ms=latency,
                              model_version=model.version, error=exc.kind)
        metrics.inferences.labels(model.version, "rejected").inc()
        raise InvalidUpload(str(exc), code=exc.kind, status_code=UPLOAD_STATUS.get(exc.kind, 422)) from exc
    latency = (time.perf_counter() - started) * 1000
    catalog.feedback.log_inference(tenant_id=principal.tenant_id, success=True, latency_ms=latency,
                          model_version=model.version, label=prediction.label)
    metrics.inferences.labels(model.version, "ok").inc()
    metrics.predicted.labels(model.version, prediction.label).inc()
    metrics.inference_latency.labels(model.version).observe(latency / 1000)
    return PredictionOut(label=prediction.label, probability=round(prediction.probability, 4),
                         probabilities=prediction.probabilities, model_version=model.version,
                         latency_ms=round(latency, 1))


@router.get("/metrics", include_in_schema=True, tags=["operations"], responses=responses(503),
            summary="Prometheus metrics (no key needed; expose only to your monitoring network)")
def metrics(request: Request) -> Response:
    """Requests, latencies, uploads and bytes, predictions, feedback agreement, and per-stage pipeline
    durations and failures (read from the catalog at scrape time)."""
    registry = request.app.state.metrics
    registry.refresh_gauges()
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
