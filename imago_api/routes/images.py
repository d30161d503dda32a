"""Upload and query images. Every query goes through the caller's `TenantCatalog`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Response, UploadFile, status

from imago_api.deps import BlobStoreDep, CatalogDep, PrincipalDep, SettingsDep, TenantDep, require_scope
from imago_api.errors import UPLOAD_STATUS, InvalidUpload, NotFound
from imago_api.schemas import (
    CheckOut,
    ClassificationOut,
    ExifOut,
    ImageDetailOut,
    ImageOut,
    ImagePage,
    OcrOut,
    StageOut,
    StatusOut,
    TagCount,
    ThumbnailOut,
    UploadOut,
    VisionOut,
)
from imago_pipeline.catalog import ImageFilters, TenantCatalog
from imago_pipeline.catalog.models import Image
from imago_pipeline.imaging.decode import InvalidImage
from imago_pipeline.registration import register_image

router = APIRouter(prefix="/images", tags=["images"])

READ = require_scope("images:read")
WRITE = require_scope("images:write")


def _image_or_404(tenant: TenantCatalog, image_id: int) -> Image:
    image = tenant.get_image(image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    return image


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadOut, dependencies=[WRITE],
             summary="Upload an image (scope images:write)",
             responses={200: {"description": "Same bytes already uploaded: the existing image"},
                        413: {"description": "Too many bytes or pixels"}, 415: {"description": "Not an image"},
                        422: {"description": "Corrupt image"}})
def upload_image(response: Response, principal: PrincipalDep, catalog: CatalogDep, blobs: BlobStoreDep,
                 settings: SettingsDep, file: Annotated[UploadFile, File(description="The image file")]) -> UploadOut:
    """Validate the content (magic bytes, pixel limit, full decode), deduplicate by SHA-256 within your
    tenant, store it and queue it for processing."""
    data = file.file.read(settings.max_upload_bytes + 1)
    try:
        registration = register_image(catalog, blobs, settings, tenant_id=principal.tenant_id,
                                      filename=file.filename, data=data)
    except InvalidImage as exc:
        raise InvalidUpload(str(exc), code=exc.kind, status_code=UPLOAD_STATUS.get(exc.kind, 422)) from exc
    if not registration.created:
        response.status_code = status.HTTP_200_OK
    return UploadOut(**ImageOut.model_validate(registration.image).model_dump(), duplicate=not registration.created)


@router.get("", response_model=ImagePage, dependencies=[READ], summary="List your images (scope images:read)")
def list_images(
    tenant: TenantDep,
    status_: Annotated[Literal["pending", "queued", "processing", "done", "failed"] | None,
                       Query(alias="status")] = None,
    created_from: Annotated[datetime | None, Query(description="Uploaded at or after (ISO 8601)")] = None,
    created_to: Annotated[datetime | None, Query(description="Uploaded before (ISO 8601)")] = None,
    camera_make: Annotated[str | None, Query(max_length=128, description="EXIF make, case-insensitive")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Full-text search over OCR text and AI "
                                   "descriptions and tags; every word must match")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ImagePage:
    filters = ImageFilters(status=status_, created_from=created_from, created_to=created_to, camera_make=camera_make,
                           text_query=q)
    items, total = tenant.list_images(filters, limit=limit, offset=offset)
    return ImagePage(items=[ImageOut.model_validate(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/tags/all", response_model=list[TagCount], dependencies=[READ],
            summary="Every tag on your images, with how many images carry it (scope images:read)")
def tag_counts(tenant: TenantDep) -> list[TagCount]:
    return [TagCount(tag=tag, count=count) for tag, count in tenant.tag_counts()]


@router.get("/{image_id}", response_model=ImageDetailOut, dependencies=[READ],
            summary="One image with everything extracted and its per-stage status (scope images:read)")
def get_image(image_id: int, tenant: TenantDep) -> ImageDetailOut:
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
        ai=VisionOut.model_validate(vision) if vision else None,
    )


@router.get("/{image_id}/status", response_model=StatusOut, dependencies=[READ],
            summary="Per-stage status, errors and data-quality checks (scope images:read)")
def get_status(image_id: int, tenant: TenantDep) -> StatusOut:
    image = _image_or_404(tenant, image_id)
    return StatusOut(id=image.id, status=image.status, error=image.error,
                     stages=[StageOut.model_validate(s) for s in tenant.get_stages(image_id)],
                     checks=[CheckOut.model_validate(c) for c in tenant.get_checks(image_id)])


def _ready(tenant: TenantCatalog, image_id: int, row, what: str):
    image = _image_or_404(tenant, image_id)
    if row is None:
        raise NotFound(f"no {what} for image {image_id} yet (image status: {image.status})", code="not_ready")
    return row


@router.get("/{image_id}/ocr", response_model=OcrOut, dependencies=[READ],
            summary="Text read in the image, with word boxes (scope images:read)")
def get_ocr(image_id: int, tenant: TenantDep) -> OcrOut:
    return OcrOut.model_validate(_ready(tenant, image_id, tenant.get_ocr(image_id), "OCR"))


@router.get("/{image_id}/ai", response_model=VisionOut, dependencies=[READ],
            summary="AI description and tags (scope images:read)")
def get_ai(image_id: int, tenant: TenantDep) -> VisionOut:
    return VisionOut.model_validate(_ready(tenant, image_id, tenant.get_vision(image_id), "description"))


@router.get("/{image_id}/exif", response_model=ExifOut, dependencies=[READ],
            summary="The image's EXIF record (scope images:read)")
def get_exif(image_id: int, tenant: TenantDep) -> ExifOut:
    return ExifOut.model_validate(_ready(tenant, image_id, tenant.get_exif(image_id), "EXIF"))
