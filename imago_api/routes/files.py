"""Expiring download links for originals and thumbnails.

The API signs a token (HMAC, itsdangerous) and serves it at `/files/signed/{token}` without an API key: the
token is the credential. Each use checks it again: a tampered or expired token answers 403, a token whose
client was disabled or whose key was revoked or rotated answers 403, and a token for an image erased since
(even if another upload got its id) answers 404. On S3 the API then redirects to a presigned URL that
lives a minute, so the bytes come from S3 but the decision stays here. Links are built from
`IMAGO_PUBLIC_URL` when set, else from the address the request came to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from imago_api.deps import BlobStoreDep, CatalogDep, ImageId, PrincipalDep, SettingsDep, TenantDep, require_scope
from imago_api.errors import AUTHENTICATED, ApiError, NotFound, responses
from imago_pipeline.core.catalog import TenantCatalog
from imago_pipeline.core.stores.blobs import BlobNotFound
from imago_pipeline.core.stores.signing import ExpiredToken, FileGrant, InvalidToken

router = APIRouter(tags=["files"])
READ = require_scope("images:read")
REDIRECT_TTL_S = 60  # a presigned S3 URL handed out by a redirect only has to last until it is followed


class SignedUrlOut(BaseModel):
    url: str
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class StoredFile:
    key: str
    media_type: str
    filename: str
    content: str  # the first 16 hex digits of the image's SHA-256


def _stored_file(tenant: TenantCatalog, image_id: int, kind: str) -> StoredFile:
    """The tenant's original or thumbnail of an image; NotFound when there is none (yet)."""
    image = tenant.get_image(image_id)
    if image is None:
        raise NotFound(f"image {image_id} not found")
    if kind == "original":
        return StoredFile(image.blob_key, image.media_type, image.original_name, image.sha256[:16])
    thumb = tenant.get_thumbnail(image_id)
    if thumb is None:
        raise NotFound(f"no thumbnail for image {image_id} yet (image status: {image.status})", code="not_ready")
    return StoredFile(thumb.blob_key, "image/jpeg", f"thumbnail-{image_id}.jpg", image.sha256[:16])


def _signed_url(request: Request, principal, tenant: TenantCatalog, settings, image_id: int,
                kind: Literal["original", "thumbnail"], expires_in: int | None) -> SignedUrlOut:
    stored = _stored_file(tenant, image_id, kind)
    ttl = min(expires_in or settings.signed_url_ttl_s, settings.signed_url_max_ttl_s)
    expires_at = int(time.time()) + ttl
    token = request.app.state.signer.sign(FileGrant(tenant.tenant_id, image_id, kind, expires_at, stored.content,
                                                    principal.key_id))
    path = request.app.url_path_for("signed_file", token=token)
    base = settings.public_url.rstrip("/") if settings.public_url else str(request.base_url).rstrip("/")
    return SignedUrlOut(url=base + path, expires_at=datetime.fromtimestamp(expires_at, UTC), expires_in=ttl)


ExpiresIn = Annotated[int | None, Query(ge=1, description="Seconds the link stays valid (capped by the server)")]


@router.get("/images/{image_id}/download-url", response_model=SignedUrlOut, dependencies=[READ],
            responses=responses(*AUTHENTICATED, 404),
            summary="An expiring link to the original file (scope images:read)")
def download_url(image_id: ImageId, request: Request, principal: PrincipalDep, tenant: TenantDep,
                 settings: SettingsDep, expires_in: ExpiresIn = None) -> SignedUrlOut:
    return _signed_url(request, principal, tenant, settings, image_id, "original", expires_in)


@router.get("/images/{image_id}/thumbnail-url", response_model=SignedUrlOut, dependencies=[READ],
            responses=responses(*AUTHENTICATED, 404),
            summary="An expiring link to the thumbnail (scope images:read)")
def thumbnail_url(image_id: ImageId, request: Request, principal: PrincipalDep, tenant: TenantDep,
                  settings: SettingsDep, expires_in: ExpiresIn = None) -> SignedUrlOut:
    return _signed_url(request, principal, tenant, settings, image_id, "thumbnail", expires_in)


@router.get("/files/signed/{token}", name="signed_file", response_class=Response,
            summary="Download through a signed link (no API key: the link is the credential)",
            responses={200: {"content": {"image/*": {}}},
                       307: {"description": "On S3: to a presigned URL of the object, valid for a minute"},
                       **responses(403, 404, 422, 503)})
def signed_file(token: Annotated[str, Path(max_length=2048)], request: Request, catalog: CatalogDep,
                blobs: BlobStoreDep) -> Response:
    try:
        grant = request.app.state.signer.verify(token)
    except ExpiredToken as exc:
        raise ApiError(str(exc), code="link_expired", status_code=403) from exc
    except InvalidToken as exc:
        raise ApiError(str(exc), code="invalid_link", status_code=403) from exc
    if not catalog.clients.key_is_active(grant.key_id, grant.tenant_id):
        raise ApiError("the link was revoked: its client is disabled or its key was revoked or rotated",
                       code="link_revoked", status_code=403)
    try:
        stored = _stored_file(catalog.for_tenant(grant.tenant_id), grant.image_id, grant.kind)
        if stored.content != grant.content:  # the id now names another image: the linked one was erased
            raise NotFound("the file no longer exists")
        disposition = "attachment" if grant.kind == "original" else "inline"
        presigned = blobs.presigned_url(stored.key, expires_in=REDIRECT_TTL_S, filename=stored.filename,
                                        media_type=stored.media_type)
        if presigned is not None:
            return RedirectResponse(presigned, status_code=307, headers={"Cache-Control": "no-store"})
        data = blobs.get(stored.key)
    except (NotFound, BlobNotFound) as exc:
        raise NotFound("the file no longer exists") from exc
    return Response(data, media_type=stored.media_type, headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(stored.filename)}",
        "Cache-Control": f"private, max-age={max(0, grant.expires_at - int(time.time()))}",
        "X-Content-Type-Options": "nosniff",
    })
