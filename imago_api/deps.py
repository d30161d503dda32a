"""Dependencies declared in route signatures: the caller, their tenant's catalog and the stores."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from imago_api.errors import MissingScope, NotAuthenticated
from imago_pipeline.catalog import Catalog, Principal, TenantCatalog
from imago_pipeline.config import ImagoSettings
from imago_pipeline.storage.blobs import BlobStore

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")


def get_settings(request: Request) -> ImagoSettings:
    return request.app.state.settings


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def get_blob_store(request: Request) -> BlobStore:
    return request.app.state.blobs


SettingsDep = Annotated[ImagoSettings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]


def get_principal(catalog: CatalogDep, api_key: Annotated[str | None, Security(api_key_header)]) -> Principal:
    principal = catalog.authenticate(api_key)
    if principal is None:
        raise NotAuthenticated("missing or invalid X-API-Key header")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str):
    """A dependency that admits only keys holding `scope`; routes declare it in their decorator."""

    def check(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise MissingScope(f"this API key lacks the '{scope}' scope", code="missing_scope")
        return principal

    check.scope = scope  # type: ignore[attr-defined]  # read by the OpenAPI description
    return Depends(check)


def get_tenant_catalog(catalog: CatalogDep, principal: PrincipalDep) -> TenantCatalog:
    return catalog.for_tenant(principal.tenant_id)


TenantDep = Annotated[TenantCatalog, Depends(get_tenant_catalog)]
