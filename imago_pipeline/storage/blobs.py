"""Blob storage for originals and thumbnails. Keys are tenant-prefixed relative paths."""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path


class BlobNotFound(KeyError):
    pass


class BlobStore(ABC):
    """Where image bytes live; the local folder is the embedded default, S3 the production one."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def presigned_url(self, key: str, *, expires_in: int, filename: str, media_type: str) -> str | None:
        """A URL the store itself serves for `expires_in` seconds, or None when it cannot (the local folder:
        the API then signs its own link)."""
        return None


def original_key(tenant_id: int, sha256: str) -> str:
    return f"tenants/{tenant_id}/originals/{sha256[:2]}/{sha256}"


def thumbnail_key(tenant_id: int, image_id: int) -> str:
    return f"tenants/{tenant_id}/thumbnails/{image_id}.jpg"


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()
