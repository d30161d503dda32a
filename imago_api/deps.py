"""Dependencies declared in route signatures: the caller, their tenant's catalog and the stores.

Every authenticated route goes through `get_principal` (key check, then the client's rate limit) and
declares its scope with `require_scope` in its decorator; the OpenAPI summary names the scope.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator

from imago_api.errors import InvalidUpload, MissingScope, NotAuthenticated, NotFound, RateLimited, Unavailable
from imago_pipeline.core.catalog import Catalog, Principal, TenantCatalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.stores.blobs import BlobStore
from imago_pipeline.core.stores.lake import Lake

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your API key")

log = logging.getLogger("imago.api")
# Ids are 32-bit integers in the catalog (Postgres INTEGER): a larger one names nothing and is refused (422)
# before it reaches the database, where it would overflow.
MAX_ID = 2**31 - 1
MAX_BYTES = 2**63 - 1  # a byte count the catalog's BIGINT holds


def _in_utc(moment: datetime) -> datetime:
    """A time the catalog can compare with (it stores UTC): one whose UTC equivalent is before year 1 or
    after 9999 (0001-01-01T00:00+01:00) is refused as invalid, not left to overflow in the query."""
    try:
        return moment.astimezone(UTC) if moment.tzinfo is not None else moment
    except OverflowError:
        raise ValueError("the time in UTC falls outside the years 1 to 9999") from None


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ClientId = Annotated[int, Path(ge=1, le=MAX_ID, description="The client's id")]


async def get_settings(request: Request) -> ImagoSettings:
    return request.app.state.settings


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_blob_store(request: Request) -> BlobStore:
    return request.app.state.blobs


async def get_lake(request: Request) -> Lake:
    return request.app.state.lake


SettingsDep = Annotated[ImagoSettings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
LakeDep = Annotated[Lake, Depends(get_lake)]

ENV_ADMIN = Principal(tenant_id=None, tenant_name="operator (IMAGO_ADMIN_API_KEY)", scopes=("admin",),
                      plan="enterprise")


async def get_principal(request: Request, response: Response,
                        api_key: Annotated[str | None, Security(api_key_header)]) -> Principal:
    """Runs on the event loop: a key authenticated moments ago (see `ClientStore.remember_s`) and an
    in-memory rate limit cost no trip to a worker thread; the database and a network rate-limit store do."""
    # State read directly, not through sub-dependencies: every request solves this one, and FastAPI's
    # solving costs more per dependency than the key lookup's statement.
    catalog: Catalog = request.app.state.catalog
    settings: ImagoSettings = request.app.state.settings
    admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key is not None else ""
    if api_key and admin_key and secrets.compare_digest(api_key.encode(), admin_key.encode()):
        principal = ENV_ADMIN
    else:
        principal = catalog.clients.remembered(api_key) or await run_in_threadpool(catalog.clients.authenticate,
                                                                                   api_key)
        if principal is None:
            raise NotAuthenticated("missing or invalid X-API-Key header")
        limiter = request.app.state.rate_limiter
        client, plan = str(principal.tenant_id), principal.plan
        if limiter.in_memory:
            decision = limiter.hit(client, plan)
        else:
            try:
                decision = await run_in_threadpool(limiter.hit, client, plan)
            except Exception as exc:  # the shared counters' store (Redis) is down: say so, recover when it is back
                log.warning("rate-limit store unavailable: %s", exc)
                raise Unavailable("the rate-limit store cannot be reached; retry shortly",
                                  code="rate_limit_unavailable") from exc
        if not decision.allowed:
            raise RateLimited(f"rate limit of the '{principal.plan}' plan reached ({decision.limit}); "
                              f"retry in {decision.retry_after_s} s", retry_after_s=decision.retry_after_s)
        response.headers["X-RateLimit-Limit"] = decision.limit
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
    request.state.client_id = principal.tenant_id  # for the access log
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str):
    """A dependency that admits only keys holding `scope`; routes declare it in their decorator."""

    async def check(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise MissingScope(f"this API key lacks the '{scope}' scope", scope=scope)
        return principal

    check.scope = scope  # type: ignore[attr-defined]  # read by the route-scope table in the tests
    return Depends(check)


async def get_tenant_catalog(catalog: CatalogDep, principal: PrincipalDep) -> TenantCatalog:
    if principal.tenant_id is None:  # the operator key owns no images
        raise MissingScope("the operator key has no images; use a client's key", scope="images:read")
    return catalog.for_tenant(principal.tenant_id)


TenantDep = Annotated[TenantCatalog, Depends(get_tenant_catalog)]


async def resolve_image_id(
    image_id: Annotated[str, Path(pattern=rf"^(\d{{1,10}}|{UUID_PATTERN})$",
                                  description="The image's id, or its uuid (what the original service's "
                                              "clients know it by)")],
    request: Request, principal: PrincipalDep,
) -> int:
    """An image named by id or by uuid, as its id. A uuid is looked up among the caller's images only."""
    if image_id.isdigit():
        value = int(image_id)
        if not 1 <= value <= MAX_ID:
            raise RequestValidationError([{"type": "less_than_equal" if value else "greater_than_equal",
                                           "loc": ("path", "image_id"), "input": image_id,
                                           "msg": f"Input should be between 1 and {MAX_ID}"}])
        return value
    tenant = await get_tenant_catalog(request.app.state.catalog, principal)
    found = await run_in_threadpool(tenant.image_id_for_uuid, image_id.lower())
    if found is None:  # an erasure cut short still knows it: a retried DELETE finishes it (other routes: 404)
        found = await run_in_threadpool(tenant.catalog.pending_erasures.image_id_for_uuid, tenant.tenant_id,
                                        image_id.lower())
    if found is None:
        raise NotFound(f"image {image_id} not found")
    return found


ImageId = Annotated[int, Depends(resolve_image_id)]


async def one_file(request: Request) -> None:
    """Refuse a form with more than one part named `file`: the route would take one and drop the others
    without a word. Reads the form FastAPI already parsed (cached on the request)."""
    parts = (await request.form()).getlist("file")
    if len(parts) > 1:
        raise InvalidUpload(f"one image per request: the form has {len(parts)} parts named file",
                            code="too_many_files", status_code=400)


def plan_priority(principal: Principal, settings: ImagoSettings) -> int:
    """The run-queue priority of the client's uploads: its plan's (an unknown plan: the lowest paid one)."""
    plan = settings.plans.get(principal.plan)
    return plan.priority if plan else 1


def effective_quota(principal: Principal, settings: ImagoSettings) -> int | None:
    """The client's own storage quota, else its plan's; None means unlimited."""
    if principal.quota_bytes is not None:
        return principal.quota_bytes
    plan = settings.plans.get(principal.plan)
    return plan.quota_bytes if plan else None
