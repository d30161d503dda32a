"""API clients (the catalog calls them tenants): plans, scopes, quotas, hashed keys and authentication."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from imago_pipeline.core.catalog.models import ApiKey, Tenant, utcnow

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog

KEY_PREFIX = "imk_"
ALL_SCOPES = ("images:read", "images:write", "images:delete", "ai:use", "admin")
DEFAULT_SCOPES = ["images:read", "images:write", "ai:use"]


class ClientExists(ValueError):
    pass


def hash_api_key(raw_key: str) -> str:
    # Keys are 256-bit random, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


# Every request's statement, built once (building and keying a statement costs more than running it).
_KEY_LOOKUP = (
    select(ApiKey.id.label("key_id"), ApiKey.key_hash, ApiKey.scopes.label("key_scopes"),
           Tenant.id.label("tenant_id"), Tenant.name.label("tenant_name"), Tenant.scopes.label("tenant_scopes"),
           Tenant.plan, Tenant.quota_bytes)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.prefix == bindparam("prefix"), ApiKey.revoked_at.is_(None), Tenant.disabled_at.is_(None))
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant (client), its plan and quota, and the scopes of the key used."""

    tenant_id: int | None  # None only for the operator's key from IMAGO_ADMIN_API_KEY (no tenant of its own)
    tenant_name: str
    scopes: tuple[str, ...]
    plan: str = "free"
    quota_bytes: int | None = None  # the client's own quota; None means its plan's
    key_id: int | None = None  # the key used (None for the operator's key from the environment)


class ClientStore:
    """Clients and their keys. Only a SHA-256 of a key is kept; the prefix finds its row.

    With `remember_s` > 0 (the API sets it), a successful authentication is remembered for that long, by the
    key's SHA-256: a client's burst of requests costs one lookup, not one each. A change made through this
    store (rotation, disabling, a new plan or scopes) forgets every remembered key at once; a change made by
    another process (the CLI, another API process) takes effect here within `remember_s`.
    """

    MAX_REMEMBERED = 10_000

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.remember_s = 0.0
        self._remembered: dict[str, tuple[float, Principal]] = {}  # key's SHA-256 -> (until, principal)
        self._forgotten = 0  # counts forgettings: a lookup that overlapped one is not remembered
        self._lock = threading.Lock()

    def by_name(self, name: str) -> Tenant | None:
        with self.catalog.session() as session:
            return session.scalar(select(Tenant).where(Tenant.name == name))

    def get_or_create(self, name: str, scopes: Sequence[str] = DEFAULT_SCOPES) -> Tenant:
        tenant = self.by_name(name)
        if tenant is not None:
            return tenant
        try:
            return self.create(name, scopes=scopes)
        except ClientExists:  # created concurrently
            return self.by_name(name)  # type: ignore[return-value]  # it exists now

    def create(self, name: str, *, scopes: Sequence[str] = DEFAULT_SCOPES, plan: str = "free",
                      quota_bytes: int | None = None) -> Tenant:
        unknown = set(scopes) - set(ALL_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        tenant = Tenant(name=name, scopes=sorted(set(scopes)), plan=plan, quota_bytes=quota_bytes)
        with self.catalog.session() as session:
            session.add(tenant)
            try:
                session.commit()
            except IntegrityError as exc:
                raise ClientExists(f"a client named {name!r} exists") from exc
            return tenant

    def list(self, *, include_disabled: bool = False) -> list[Tenant]:
        query = select(Tenant).order_by(Tenant.id)
        if not include_disabled:
            query = query.where(Tenant.disabled_at.is_(None))
        with self.catalog.session() as session:
            return list(session.scalars(query))

    def get(self, tenant_id: int) -> Tenant | None:
        with self.catalog.session() as session:
            return session.get(Tenant, tenant_id)

    def update(self, tenant_id: int, **changes: Any) -> Tenant | None:
        """Change plan, scopes, quota_bytes or name; a key's narrower scopes stay within the new ones."""
        if "scopes" in changes:
            unknown = set(changes["scopes"]) - set(ALL_SCOPES)
            if unknown:
                raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
            changes["scopes"] = sorted(set(changes["scopes"]))
        with self.catalog.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            for field, value in changes.items():
                setattr(tenant, field, value)
            try:
                session.commit()
            except IntegrityError as exc:
                raise ClientExists(f"a client named {changes.get('name')!r} exists") from exc
        self.forget_authentications()
        return tenant

    def disable(self, tenant_id: int) -> Tenant | None:
        """Soft delete: the client and every key stop working; its images stay until erased."""
        now = utcnow()
        with self.catalog.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            tenant.disabled_at = now
            session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=now))
            session.commit()
        self.forget_authentications()
        return tenant

    def issue_key(self, tenant_id: int, scopes: Sequence[str] | None = None) -> str:
        """Create a key and return it: the only time the raw key exists outside the caller.

        `scopes=None` gives the key all of its client's scopes, now and after a change; a list narrows it.
        """
        raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.catalog.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise ValueError(f"no client {tenant_id}")
            if scopes is not None and not set(scopes) <= set(tenant.scopes):
                extra = ", ".join(sorted(set(scopes) - set(tenant.scopes)))
                raise ValueError(f"client {tenant.name!r} does not have the scopes {extra}")
            session.add(ApiKey(tenant_id=tenant_id, prefix=raw_key[:12], key_hash=hash_api_key(raw_key),
                               scopes=None if scopes is None else sorted(set(scopes))))
            session.commit()
        return raw_key

    def rotate_key(self, tenant_id: int) -> str | None:
        """Revoke every key of the client and issue one new key with all its scopes."""
        with self.catalog.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=utcnow()))
            session.commit()
        self.forget_authentications()
        return self.issue_key(tenant_id)

    def active_key_counts(self) -> dict[int, int]:
        with self.catalog.session() as session:
            rows = session.execute(select(ApiKey.tenant_id, func.count()).where(ApiKey.revoked_at.is_(None))
                                   .group_by(ApiKey.tenant_id))
            return dict(rows.tuples().all())

    def authenticate(self, raw_key: str | None) -> Principal | None:
        """The key's principal, or None for a missing, unknown, revoked or disabled key. Remembered (see the
        class) when `remember_s` > 0; refusals never are."""
        if not raw_key or not raw_key.startswith(KEY_PREFIX):
            return None
        digest = hash_api_key(raw_key)
        forgotten = self._forgotten
        with self.catalog.begin() as connection:
            candidates = connection.execute(_KEY_LOOKUP, {"prefix": raw_key[:12]}).all()
        for key in candidates:
            if secrets.compare_digest(key.key_hash, digest):
                scopes = [s for s in key.tenant_scopes if key.key_scopes is None or s in key.key_scopes]
                principal = Principal(tenant_id=key.tenant_id, tenant_name=key.tenant_name, scopes=tuple(scopes),
                                      plan=key.plan, quota_bytes=key.quota_bytes, key_id=key.key_id)
                if self.remember_s > 0:
                    with self._lock:
                        if forgotten != self._forgotten:  # a change committed during the lookup
                            return principal
                        if len(self._remembered) >= self.MAX_REMEMBERED:
                            self._remembered.pop(next(iter(self._remembered)))  # the oldest
                        self._remembered[digest] = (time.monotonic() + self.remember_s, principal)
                return principal
        return None

    def remembered(self, raw_key: str | None) -> Principal | None:
        """The principal of a key authenticated less than `remember_s` ago, without the database; None when
        there is none (then `authenticate`)."""
        if not raw_key or not self._remembered:
            return None
        digest = hash_api_key(raw_key)
        entry = self._remembered.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            with self._lock:
                self._remembered.pop(digest, None)
            return None
        return entry[1]

    def forget_authentications(self) -> None:
        with self._lock:
            self._remembered.clear()
            self._forgotten += 1

    def key_is_active(self, key_id: int, tenant_id: int) -> bool:
        """The key exists, belongs to the tenant, is not revoked, and its client is not disabled."""
        with self.catalog.session() as session:
            return session.execute(
                select(ApiKey.id).join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None),
                       Tenant.disabled_at.is_(None))).first() is not None
