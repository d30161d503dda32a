"""Upload and query images. Every query goes through the caller's `TenantCatalog`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Response, UploadFile, status

from imago_api.deps import BlobStoreDep, CatalogDep, PrincipalDep, SettingsDep, TenantDep, require_scope
from imago_api.errors import UPLOAD_STATUS, InvalidUpload, NotFound
from imago_api.schemas import ExifOut, ImageDetailOut, ImageOut, ImagePage, StageOut, ThumbnailOut, UploadOut
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
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ImagePage:
    filters = ImageFilters(status=status_, created_from=created_from, created_to=created_to, camera_make=camera_make)
    items, total = tenant.list_images(filters, limit=limit, offset=offset)
    return ImagePage(items=[ImageOut.model_validate(i) for i in items], total=total, limit=limit, offset=offset)


@router.get("/{image_id}", response_model=ImageDetailOut, dependencies=[READ],
            summary="One image with its EXIF, thumbnail and per-stage status (scope images:read)")
def get_image(image_id: int, tenant: TenantDep) -> ImageDetailOut:
    image = _image_or_404(tenant, image_id)
    exif, thumb = tenant.get_exif(image_id), tenant.get_thumbnail(image_id)
    return ImageDetailOut(
        **ImageOut.model_validate(image).model_dump(),
        stages=[StageOut.model_validate(s) for s in tenant.get_stages(image_id)],
        exif=ExifOut.model_validate(exif) if exif else None,
        thumbnail=ThumbnailOut.model_validate(thumb) if thumb else None,
    )


@router.get("/{image_id}/exif", response_model=ExifOut, dependencies=[READ],
            summary="The image's EXIF record (scope images:read)")
def get_exif(image_id: int, tenant: TenantDep) -> ExifOut:
    image = _image_or_404(tenant, image_id)
    exif = tenant.get_exif(image_id)
    if exif is None:
        raise NotFound(f"no EXIF for image {image_id} yet (image status: {image.status})", code="not_ready")
    return ExifOut.model_validate(exif)
