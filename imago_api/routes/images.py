"""Upload and query images. Every query goes through the caller's `TenantCatalog`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from imago_api.deps import (
    MAX_ID,
    BlobStoreDep,
    CatalogDep,
    ImageId,
    LakeDep,
    PrincipalDep,
    SettingsDep,
    TenantDep,
    UtcTime,
    effective_quota,
    one_file,
    plan_priority,
    require_scope,
)
from imago_api.errors import AUTHENTICATED, UPLOAD_STATUS, InvalidUpload, NotFound, responses
from imago_api.events import STOPPING, ProgressFeed
from imago_api.schemas import (
    CheckOut,
    ClassificationOut,
    ContentOut,
    DuplicateGroupOut,
    DuplicatesOut,
    ExifOut,
    ImageDetailOut,
    ImageOut,
    ImagePage,
    OcrOut,
    SimilarItem,
    SimilarOut,
    StageOut,
    StatusOut,
    TagCount,
    ThumbnailOut,
    UploadOut,
    UsageOut,
    VisionOut,
)
from imago_pipeline.core.catalog import Catalog, ImageFilters, QuotaExceeded, TenantCatalog
from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.catalog.progress import Progress
from imago_pipeline.core.embedding.imagenet import class_tags, classes
from imago_pipeline.core.embedding.similarity import DUPLICATE_THRESHOLD
from imago_pipeline.core.enrichment.batch import IMAGE_PARTITIONS
from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.erasure import erase_image
from imago_pipeline.core.ingest import check_upload
from imago_pipeline.core.similar_images import NoEmbedding, duplicates, similar

router = APIRouter(prefix="/images", tags=["images"], responses=responses(*AUTHENTICATED, 404))

READ = require_scope("images:read")
WRITE = require_scope("images:write")
DELETE = require_scope("images:delete")


def _image_or_404(tenant: TenantCatalog, image_id: int) -> Image:
    image = tenant.get_image(image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return image


# Larger uploads are checked in a worker thread before they join a batch: a multi-megapixel decode (even at
# 1/8 scale) takes milliseconds, which every upload in the batch would wait. Smaller ones (a phone's
# thumbnail, a scan's page) are checked in the batch's own thread, saving a thread trip.
CHECK_APART_BYTES = 1 << 20

_UPLOAD = dict(status_code=status.HTTP_201_CREATED, response_model=UploadOut, dependencies=[WRITE],
               responses={200: {"description": "Same bytes already uploaded: the existing image"},
                          **responses(400, 413, 415)})


@router.post("", summary="Upload an image (scope images:write)", **_UPLOAD)
@router.post("/upload", summary="Upload an image: the original service's route, same answer (scope images:write)",
             **_UPLOAD)
async def upload_image(request: Request, response: Response, principal: PrincipalDep,
                       file: Annotated[UploadFile, File(description="The image file")]) -> UploadOut:
    """Validate the content (magic bytes, pixel limit, full decode), deduplicate by SHA-256 within your
    tenant, check your storage quota, store it and queue it for processing."""
    state = request.app.state  # not dependencies: each costs more to solve than this route's statements
    settings, metrics = state.settings, state.metrics
    await one_file(request)
    data = await file.read(settings.max_upload_bytes + 1)
    try:  # checked and registered with the uploads arriving with it, in one transaction (`UploadRegistrar`)
        checked = None
        if len(data) > CHECK_APART_BYTES:  # its decode would hold up the others' batch
            checked = await run_in_threadpool(check_upload, data, settings)
        registration = await asyncio.wrap_future(state.registrar.submit(
            settings, tenant_id=principal.tenant_id, filename=file.filename, data=data, checked=checked,
            quota_bytes=effective_quota(principal, settings), priority=plan_priority(principal, settings)))
    except InvalidImage as exc:
        metrics.uploads.labels(exc.kind).inc()
        raise InvalidUpload(str(exc), code=exc.kind, status_code=UPLOAD_STATUS.get(exc.kind, 422)) from exc
    except QuotaExceeded as exc:
        metrics.uploads.labels("quota_exceeded").inc()
        raise InvalidUpload(str(exc), code="quota_exceeded", status_code=413, used_bytes=exc.used,
                            quota_bytes=exc.quota) from exc
    if not registration.created:
        response.status_code = status.HTTP_200_OK
        metrics.uploads.labels("duplicate").inc()
    else:
        metrics.uploads.labels("accepted").inc()
        metrics.upload_bytes.inc(len(data))
    return UploadOut(**ImageOut.model_validate(registration.image).model_dump(), duplicate=not registration.created)


@router.get("", response_model=ImagePage, dependencies=[READ],
            summary="List your images, with your storage usage and quota (scope images:read)")
def list_images(
    tenant: TenantDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    status_: Annotated[Literal["pending", "queued", "requeued", "processing", "done", "failed"] | None,
                       Query(alias="status")] = None,
    created_from: Annotated[UtcTime | None, Query(description="Uploaded at or after (ISO 8601)")] = None,
    created_to: Annotated[UtcTime | None, Query(description="Uploaded before (ISO 8601)")] = None,
    camera_make: Annotated[str | None, Query(max_length=128, description="EXIF make, case-insensitive")] = None,
    country: Annotated[str | None, Query(pattern="^[A-Za-z]{2}$", description="Taken in this country "
                                         "(ISO 3166-1 alpha-2, e.g. ES), from the GPS position")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Full-text search over OCR text, AI "
                                   "descriptions and tags and the place (city, region, country name); every "
                                   "word must match")] = None,
    dead_letter: Annotated[bool | None, Query(description="Only failed images whose retries ran out (true), "
                                              "or none of them (false)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ImagePage:
    filters = ImageFilters(status=status_, created_from=created_from, created_to=created_to, camera_make=camera_make,
                           country_code=country, text_query=(q or "").strip() or None,
                           dead_letter=dead_letter)
    items, total = tenant.list_images(filters, limit=limit, offset=offset)
    used, count = tenant.storage_used()
    return ImagePage(items=[ImageOut.model_validate(i) for i in items], total=total, limit=limit, offset=offset,
                     usage=UsageOut(images=count, bytes_used=used, quota_bytes=effective_quota(principal, settings)))


@router.get("/tags/all", response_model=list[TagCount], dependencies=[READ],
            summary="Every tag on your images, with how many images carry it (scope images:read)")
def tag_counts(tenant: TenantDep) -> list[TagCount]:
    return [TagCount(tag=tag, count=count) for tag, count in tenant.tag_counts()]


@router.get("/duplicates", response_model=DuplicatesOut, dependencies=[READ],
            summary="Groups of near-identical images: the same picture re-encoded, resized or converted "
                    "(scope images:read)")
def get_duplicates(tenant: TenantDep, threshold: Annotated[float, Query(
        ge=0.9, le=1.0, description="Correlation of the images' 64×64 grey fingerprints at or above which two "
        f"images are the same picture (default {DUPLICATE_THRESHOLD}; their embeddings must agree too). See "
        "docs/classifier.md for the measurements behind it")] = DUPLICATE_THRESHOLD) -> DuplicatesOut:
    """Exact copies are refused at upload; these are the copies that differ in bytes. Single linkage: images
    joined by a chain of near-duplicate pairs form one group, largest groups first."""
    groups = duplicates(tenant, threshold=threshold)
    images = _images_by_id(tenant, [i for g in groups for i in g.image_ids])
    return DuplicatesOut(threshold=threshold, groups=[DuplicateGroupOut(
        images=[ImageOut.model_validate(images[i]) for i in g.image_ids if i in images], min_score=g.min_score)
        for g in groups])


def _images_by_id(tenant: TenantCatalog, ids: list[int]) -> dict[int, Image]:
    return {image.id: image for image in tenant.get_images(ids)}


@router.get("/{image_id}/similar", response_model=SimilarOut, dependencies=[READ],
            summary="Your images that look most like this one, with scores (scope images:read)")
def get_similar(image_id: ImageId, tenant: TenantDep,
                limit: Annotated[int, Query(ge=1, le=100, description="How many images")] = 10) -> SimilarOut:
    """Cosine similarity of the images' embeddings (what the pretrained backbone sees), among your images
    only; 1 is the same picture, near-duplicates score above the duplicate threshold."""
    image = _image_or_404(tenant, image_id)
    try:
        matches = similar(tenant, image_id, limit=limit)
    except NoEmbedding:
        raise NotFound(f"image {image_id} has no embedding yet (image status: {image.status})",
                       code="not_ready") from None
    images = _images_by_id(tenant, [m.image_id for m in matches])
    return SimilarOut(image_id=image_id, items=[SimilarItem(image=ImageOut.model_validate(images[m.image_id]),
                                                            score=m.score) for m in matches if m.image_id in images])


def _content(row) -> list[ContentOut] | None:
    if row is None:
        return None
    names = classes()
    return [ContentOut(name=names[int(i)].name, tags=list(class_tags(int(i))), probability=float(p))
            for i, p in row.imagenet]


@router.get("/{image_id}", response_model=ImageDetailOut, dependencies=[READ],
            summary="One image with everything extracted and its per-stage status (scope images:read)")
def get_image(image_id: ImageId, tenant: TenantDep) -> ImageDetailOut:
    image = _image_or_404(tenant, image_id)
    exif, thumb = tenant.get_exif(image_id), tenant.get_thumbnail(image_id)
    ocr, vision = tenant.get_ocr(image_id), tenant.get_vision(image_id)
    label = tenant.get_classification(image_id)
    return ImageDetailOut(
        **ImageOut.model_validate(image).model_dump(),
        stages=[StageOut.model_validate(s) for s in tenant.get_stages(image_id)],
        checks=[CheckOut.model_validate(c) for c in tenant.get_checks(image_id)],
        exif=ExifOut.model_validate(exif) if exif else None,
        thumbnail=ThumbnailOut.model_validate(thumb) if thumb else None,
        ocr=OcrOut.model_validate(ocr) if ocr else None,
        classification=ClassificationOut.model_validate(label) if label else None,
        content=_content(tenant.get_embedding(image_id)),
        ai=VisionOut.model_validate(vision) if vision else None,
    )


@router.get("/{image_id}/status", response_model=StatusOut, dependencies=[READ],
            summary="Per-stage status, errors and data-quality checks (scope images:read)")
def get_status(image_id: ImageId, tenant: TenantDep) -> StatusOut:
    image = _image_or_404(tenant, image_id)
    return StatusOut(id=image.id, uuid=image.uuid, status=image.status, error=image.error,
                     attempts=image.attempts or 0, dead_letter=image.gave_up_at is not None,
                     started_at=image.started_at,
                     done_at=image.processed_at if image.status in ("done", "failed") else None,
                     stages=[StageOut.model_validate(s) for s in tenant.get_stages(image_id)],
                     checks=[CheckOut.model_validate(c) for c in tenant.get_checks(image_id)])


@router.get("/{image_id}/events", dependencies=[READ], response_class=StreamingResponse,
            summary="Follow the image's processing live, as Server-Sent Events (scope images:read)",
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`stage` and `status` events until the image is done or failed, then "
                                            "`end`; a `: keep-alive` comment when nothing happens."}})
async def image_events(image_id: ImageId, tenant: TenantDep, principal: PrincipalDep,
                       request: Request) -> StreamingResponse:
    """The image's current state, then each change: `event: stage` (`{"id", "stage", "status", "error"}`)
    when a stage finishes, `event: status` (`{"id", "status", "error", "stages"}`) when the image's status
    changes, and `event: end` when it is done or failed (or erased), after which the server closes the
    stream. Comments (`: keep-alive`) keep an idle connection open. Reconnecting starts with the current
    state again, so nothing is missed. A key revoked (or its client disabled) meanwhile ends the stream
    within a heartbeat: `end` with status `key_revoked`."""
    await run_in_threadpool(_image_or_404, tenant, image_id)
    catalog: Catalog = request.app.state.catalog
    feed: ProgressFeed = request.app.state.progress_feed
    heartbeat = request.app.state.settings.events_heartbeat_s

    async def key_revoked() -> bool:
        try:
            return not await run_in_threadpool(catalog.clients.key_is_active, principal.key_id, principal.tenant_id)
        except Exception:  # the catalog down for a moment: the key stays as good as it was
            return False

    async def stream():
        async with feed.watch(image_id) as queue:
            yield "retry: 2000\n\n"
            previous: Progress | None = None
            checked = time.monotonic()
            while True:
                idle = False
                try:
                    state = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    idle = True
                if time.monotonic() - checked >= heartbeat:
                    checked = time.monotonic()
                    if await key_revoked():
                        yield _sse("end", {"id": image_id, "status": "key_revoked",
                                           "error": "the API key was revoked or its client disabled"})
                        return
                if idle:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if state is STOPPING:  # the server stops: a clean end, the client reconnects to the next one
                    return
                if state is None or state.tenant_id != tenant.tenant_id:
                    yield _sse("end", {"id": image_id, "status": "erased", "error": None})
                    return
                for event, data in _transitions(previous, state):
                    yield _sse(event, data)
                previous = state
                if state.finished:
                    yield _sse("end", {"id": image_id, "status": state.status, "error": state.error})
                    return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _transitions(previous: Progress | None, state: Progress) -> list[tuple[str, dict]]:
    """What changed from `previous` to `state`: finished stages first, then the image's status."""
    before = {s.stage: s for s in previous.stages} if previous else {}
    events = [("stage", {"id": state.image_id, "stage": s.stage, "status": s.status, "error": s.error})
              for s in state.stages if before.get(s.stage) != s]
    if previous is None or (previous.status, previous.error) != (state.status, state.error):
        events.append(("status", {"id": state.image_id, "status": state.status, "error": state.error,
                                  "stages": {s.stage: s.status for s in state.stages}}))
    return events


def _ready(tenant: TenantCatalog, image_id: int, row, what: str):
    image = _image_or_404(tenant, image_id)
    if row is None:
        raise NotFound(f"no {what} for image {image_id} yet (image status: {image.status})", code="not_ready")
    return row


@router.get("/{image_id}/ocr", response_model=OcrOut, dependencies=[READ],
            summary="Text read in the image, with word boxes (scope images:read)")
def get_ocr(image_id: ImageId, tenant: TenantDep) -> OcrOut:
    return OcrOut.model_validate(_ready(tenant, image_id, tenant.get_ocr(image_id), "OCR"))


@router.get("/{image_id}/ai", response_model=VisionOut, dependencies=[READ],
            summary="AI description and tags (scope images:read)")
def get_ai(image_id: ImageId, tenant: TenantDep) -> VisionOut:
    return VisionOut.model_validate(_ready(tenant, image_id, tenant.get_vision(image_id), "description"))


@router.get("/{image_id}/exif", response_model=ExifOut, dependencies=[READ],
            summary="The image's EXIF record (scope images:read)")
def get_exif(image_id: ImageId, tenant: TenantDep) -> ExifOut:
    return ExifOut.model_validate(_ready(tenant, image_id, tenant.get_exif(image_id), "EXIF"))


@router.post("/{image_id}/reprocess", response_model=ImageOut, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[WRITE], summary="Queue the image to be processed again, every stage (scope images:write)")
def reprocess_image(image_id: ImageId, tenant: TenantDep, principal: PrincipalDep,
                    settings: SettingsDep) -> ImageOut:
    """The upload sensor picks it up within seconds (status `requeued`, then `done` or `failed`)."""
    image = tenant.request_reprocess(image_id, priority=plan_priority(principal, settings))
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return ImageOut.model_validate(image)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[DELETE],
               summary="Erase the image everywhere: file, thumbnail, catalog, lake, Dagster (scope images:delete)")
def delete_image(image_id: ImageId, request: Request, principal: PrincipalDep, catalog: CatalogDep,
                 blobs: BlobStoreDep, lake: LakeDep) -> Response:
    """Irreversible. Its feedback goes too; signed links to it stop working. An audit row keeps only counts.
    An erasure cut short (a 503 while the file store was down) is finished by retrying the DELETE: 204."""
    from imago_pipeline.dagster_internals import erase_dagster_partition  # Dagster loads on first erasure

    instance = request.app.state.dagster_instance()
    report = erase_image(catalog, blobs, lake, tenant_id=principal.tenant_id, image_id=image_id,
                         forget_runs=lambda erased: erase_dagster_partition(instance, IMAGE_PARTITIONS, str(erased)))
    if report is None:
        raise NotFound(f"image {image_id} not found")
    request.app.state.metrics.erasures.inc()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
