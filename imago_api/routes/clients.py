"""Client (tenant) management for operators: plan, scopes, quota, keys. Every route needs `admin`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, field_validator

from imago_api.deps import MAX_BYTES, CatalogDep, ClientId, SettingsDep, require_scope
from imago_api.errors import AUTHENTICATED, ApiError, Conflict, NotFound, responses
from imago_pipeline.core.catalog import ALL_SCOPES, DEFAULT_SCOPES, ClientExists
from imago_pipeline.core.catalog.models import Tenant
from imago_pipeline.core.config import ImagoSettings

router = APIRouter(prefix="/auth/clients", tags=["clients"], dependencies=[require_scope("admin")],
                   responses=responses(*AUTHENTICATED, 404, 409))

Scope = str


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {list(ALL_SCOPES)}")
    return sorted(set(scopes))


class ClientIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w .@-]+$")
    plan: str = "free"
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    quota_bytes: int | None = Field(default=None, ge=0, le=MAX_BYTES,
                                    description="Override of the plan's storage quota")

    _scopes = field_validator("scopes")(_check_scopes)


class ClientPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w .@-]+$")
    plan: str | None = None
    scopes: list[Scope] | None = None
    quota_bytes: int | None = Field(default=None, ge=0, le=MAX_BYTES, description="An explicit null drops the "
                                    "override: the plan's quota applies again")

    @field_validator("scopes")
    @classmethod
    def _valid(cls, scopes):
        return None if scopes is None else _check_scopes(scopes)


class ClientOut(BaseModel):
    id: int
    name: str
    plan: str
    scopes: list[str]
    quota_bytes: int | None = Field(description="Effective quota (the override or the plan's); null = unlimited")
    rate_limit: str
    active_keys: int
    created_at: datetime
    updated_at: datetime | None
    disabled_at: datetime | None


class ClientWithKey(ClientOut):
    api_key: str = Field(description="Shown this once; only a hash is stored")


def _out(tenant: Tenant, settings: ImagoSettings, keys: dict[int, int]) -> ClientOut:
    plan = settings.plans.get(tenant.plan)
    quota = tenant.quota_bytes if tenant.quota_bytes is not None else (plan.quota_bytes if plan else None)
    return ClientOut(id=tenant.id, name=tenant.name, plan=tenant.plan, scopes=tenant.scopes, quota_bytes=quota,
                     rate_limit=plan.rate_limit if plan else "", active_keys=keys.get(tenant.id, 0),
                     created_at=tenant.created_at, updated_at=tenant.updated_at, disabled_at=tenant.disabled_at)


def _known_plan(settings: ImagoSettings, plan: str | None) -> None:
    if plan is not None and plan not in settings.plans:
        raise ApiError(f"unknown plan {plan!r}; plans: {sorted(settings.plans)}", code="unknown_plan",
                       status_code=422)


@router.post("", response_model=ClientWithKey, status_code=status.HTTP_201_CREATED,
             summary="Create a client and its first API key, shown once (scope admin)")
def create_client(body: ClientIn, catalog: CatalogDep, settings: SettingsDep) -> ClientWithKey:
    _known_plan(settings, body.plan)
    try:
        tenant = catalog.clients.create(body.name, scopes=body.scopes, plan=body.plan, quota_bytes=body.quota_bytes)
    except ClientExists as exc:
        raise Conflict(str(exc), code="client_exists") from exc
    key = catalog.clients.issue_key(tenant.id)
    return ClientWithKey(**_out(tenant, settings, {tenant.id: 1}).model_dump(), api_key=key)


@router.get("", response_model=list[ClientOut], summary="List clients (scope admin)")
def list_clients(catalog: CatalogDep, settings: SettingsDep, include_disabled: bool = False) -> list[ClientOut]:
    keys = catalog.clients.active_key_counts()
    return [_out(t, settings, keys) for t in catalog.clients.list(include_disabled=include_disabled)]


def _client_or_404(catalog, client_id: int) -> Tenant:
    tenant = catalog.clients.get(client_id)
    if tenant is None:
        raise NotFound(f"client {client_id} not found")
    return tenant


@router.get("/{client_id}", response_model=ClientOut, summary="One client (scope admin)")
def get_client(client_id: ClientId, catalog: CatalogDep, settings: SettingsDep) -> ClientOut:
    return _out(_client_or_404(catalog, client_id), settings, catalog.clients.active_key_counts())


@router.patch("/{client_id}", response_model=ClientOut,
              summary="Change a client's name, plan, scopes or quota (scope admin)")
def update_client(client_id: ClientId, body: ClientPatch, catalog: CatalogDep, settings: SettingsDep) -> ClientOut:
    _known_plan(settings, body.plan)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "quota_bytes"}
    try:
        tenant = catalog.clients.update(client_id, **changes)
    except ClientExists as exc:
        raise Conflict(str(exc), code="client_exists") from exc
    if tenant is None:
        raise NotFound(f"client {client_id} not found or disabled")
    return _out(tenant, settings, catalog.clients.active_key_counts())


@router.delete("/{client_id}", response_model=ClientOut,
               summary="Disable a client: its keys stop working at once, its images stay (scope admin)")
def delete_client(client_id: ClientId, catalog: CatalogDep, settings: SettingsDep) -> ClientOut:
    tenant = catalog.clients.disable(client_id)
    if tenant is None:
        raise NotFound(f"client {client_id} not found or already disabled")
    return _out(tenant, settings, {})


@router.post("/{client_id}/rotate-key", response_model=ClientWithKey,
             summary="Revoke every key of the client and issue a new one, shown once (scope admin)")
def rotate_key(client_id: ClientId, catalog: CatalogDep, settings: SettingsDep) -> ClientWithKey:
    key = catalog.clients.rotate_key(client_id)
    if key is None:
        raise NotFound(f"client {client_id} not found or disabled")
    return ClientWithKey(**_out(_client_or_404(catalog, client_id), settings, {client_id: 1}).model_dump(),
                         api_key=key)
