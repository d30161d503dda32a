"""Expiring, HMAC-signed download tokens for the local blob store (S3 presigns its own URLs).

A token names the tenant, the image, the image's content (the start of its SHA-256), which file (original
or thumbnail), the API key that asked for it, and when it expires; it is signed with the deployment's
secret (itsdangerous, HMAC-SHA256). When the token is used the server checks all of it again: a link to an
erased image finds nothing (and never another image that got its id), and a link stops working when its
client is disabled or its key revoked or rotated.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from imago_pipeline.core.config import MIN_SECRET_CHARS
from imago_pipeline.core.stores import durable

log = logging.getLogger(__name__)


class InvalidToken(ValueError):
    """Tampered, malformed or signed with another secret."""


class ExpiredToken(ValueError):
    pass


@dataclass(frozen=True)
class FileGrant:
    tenant_id: int
    image_id: int
    kind: str  # "original" | "thumbnail"
    expires_at: int  # Unix seconds
    content: str  # the first 16 hex digits of the image's SHA-256
    key_id: int  # the API key that asked for the link


class UrlSigner:
    def __init__(self, secret: str):
        self._serializer = URLSafeSerializer(secret, salt="imago-signed-file")

    def sign(self, grant: FileGrant) -> str:
        return self._serializer.dumps([grant.tenant_id, grant.image_id, grant.kind, grant.expires_at, grant.content,
                                       grant.key_id])

    def verify(self, token: str, *, now: float | None = None) -> FileGrant:
        try:
            tenant_id, image_id, kind, expires_at, content, key_id = self._serializer.loads(token)
            grant = FileGrant(int(tenant_id), int(image_id), str(kind), int(expires_at), str(content), int(key_id))
        except (BadSignature, ValueError, TypeError) as exc:
            raise InvalidToken("the link is invalid") from exc
        # Base64 leaves spare bits in a token's last character that its decoder ignores: only the one
        # canonical spelling of a grant is accepted, so a changed character never still opens the file.
        if not secrets.compare_digest(self.sign(grant), token):
            raise InvalidToken("the link is invalid")
        if grant.expires_at < (time.time() if now is None else now):
            raise ExpiredToken("the link has expired")
        return grant


def load_or_create_secret(path: Path) -> str:
    """The embedded default's signing secret: made once, kept next to the catalog (mode 0600).

    Made under a lock, written aside and renamed (`durable`): processes starting together on a fresh home
    (the API's workers) all get the one secret, and none ever reads a file half written. A file left empty
    or cut short (a crash while an earlier version wrote it in place) is replaced: an empty secret would
    sign links anyone could forge."""
    secret = _stored_secret(path)
    if secret is not None:
        return secret
    durable.make_folders(path.parent)
    with durable.file_lock(path.with_name(f".{path.name}.lock")):
        secret = _stored_secret(path)  # another process may have made it while this one waited
        if secret is None:
            if path.is_file() and path.read_text().strip():
                log.warning("%s held a secret shorter than %d characters: replaced (links signed with it stop "
                            "working)", path, MIN_SECRET_CHARS)
            secret = secrets.token_urlsafe(48)
            durable.write_file(path, secret.encode(), mode=0o600)
    return secret


def _stored_secret(path: Path) -> str | None:
    """The secret in `path`, or None when there is none or it is shorter than any this code makes."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        return None
    return secret if len(secret) >= MIN_SECRET_CHARS else None
