"""Expiring download links for originals and thumbnails.

On S3 the store presigns its own URL; on the local store the API signs a token (HMAC, itsdangerous) and
serves it at `/files/signed/{token}` without an API key: the token is the credential. A tampered or
expired token answers 403; a token for an image erased since answers 404.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from imago_api.deps import BlobStoreDep, CatalogDep, SettingsDep, TenantDep, require_scope
from imago_api.errors import ApiError, NotFound
from imago_pipeline.catalog import TenantCatalog
from imago_pipeline.storage.blobs import BlobNotFound
from imago_pipeline.storage.signing import ExpiredToken, FileGrant, InvalidToken

router = APIRouter(tags=["files"])
READ = require_scope("images:read")


class SignedUrlOut(BaseModel):
    url: str
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class StoredFile:
    key: str
    media_type: str
    filename: str


def _stored_file(tenant: TenantCatalog, image_id: int, kind: str) -> StoredFile:
    """The tenant's original or thumbnail of an image; NotFound when there is none (yet)."""
    image = tenant.get_image(image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    if kind == "original":
        return StoredFile(image.blob_key, image.media_type, image.original_name)
    thumb = tenant.get_thumbnail(image_id)
    if thumb is None:
        raise NotFound(f"no thumbnail for image {image_id} yet (image status: {image.status})", code="not_ready")
    return StoredFile(thumb.blob_key, "image/jpeg", f"thumbnail-{image_id}.jpg")


def _signed_url(request: Request, tenant: TenantDep, blobs, settings, image_id: int,
                kind: Literal["original", "thumbnail"], expires_in: int | None) -> SignedUrlOut:
    stored = _stored_file(tenant, image_id, kind)
    ttl = min(expires_in or settings.signed_url_ttl_s, settings.signed_url_max_ttl_s)
    expires_at = int(time.time()) + ttl
    url = blobs.presigned_url(stored.key, expires_in=ttl, filename=stored.filename, media_type=stored.media_type)
    if url is None:
        token = request.app.state.signer.sign(FileGrant(tenant.tenant_id, image_id, kind, expires_at))
        url = str(request.url_for("signed_file", token=token))
    return SignedUrlOut(url=url, expires_at=datetime.fromtimestamp(expires_at, timezone.utc), expires_in=ttl)


ExpiresIn = Annotated[int | None, Query(ge=1, description="Seconds the link stays valid (capped by the server)")]


@router.get("/images/{image_id}/download-url", response_model=SignedUrlOut, dependencies=[READ],
            summary="An expiring link to the original file (scope images:read)")
def download_url(image_id: int, request: Request, tenant: TenantDep, blobs: BlobStoreDep, settings: SettingsDep,
                 expires_in: ExpiresIn = None) -> SignedUrlOut:
    return _signed_url(request, tenant, blobs, settings, image_id, "original", expires_in)


@router.get("/images/{image_id}/thumbnail-url", response_model=SignedUrlOut, dependencies=[READ],
            summary="An expiring link to the thumbnail (scope images:read)")
def thumbnail_url(image_id: int, request: Request, tenant: TenantDep, blobs: BlobStoreDep, settings: SettingsDep,
                  expires_in: ExpiresIn = None) -> SignedUrlOut:
    return _signed_url(request, tenant, blobs, settings, image_id, "thumbnail", expires_in)


@router.get("/files/signed/{token}", name="signed_file", response_class=Response,
            summary="Download through a signed link (no API key: the link is the credential)",
            responses={200: {"content": {"image/*": {}}}, 403: {"description": "Tampered or expired link"},
                       404: {"description": "The image no longer exists"}})
def signed_file(token: str, request: Request, catalog: CatalogDep, blobs: BlobStoreDep) -> Response:
    try:
        grant = request.app.state.signer.verify(token)
    except ExpiredToken as exc:
        raise ApiError(str(exc), code="link_expired", status_code=403) from exc
    except InvalidToken as exc:
        raise ApiError(str(exc), code="invalid_link", status_code=403) from exc
    try:
        stored = _stored_file(catalog.for_tenant(grant.tenant_id), grant.image_id, grant.kind)
        data = blobs.get(stored.key)
    except (NotFound, BlobNotFound) as exc:
        raise NotFound("the file no longer exists") from exc
    disposition = "attachment" if grant.kind == "original" else "inline"
    return Response(data, media_type=stored.media_type, headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(stored.filename)}",
        "Cache-Control": f"private, max-age={max(0, grant.expires_at - int(time.time()))}",
        "X-Content-Type-Options": "nosniff",
    })
