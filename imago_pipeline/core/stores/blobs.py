"""Blob storage for originals and thumbnails. Keys are tenant-prefixed relative paths.

The local folder is the embedded default; S3 (or any S3-compatible store such as MinIO) the production one,
reached through a boto3 client.
"""

from __future__ import annotations

import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from imago_pipeline.core.stores import durable


class BlobNotFound(KeyError):
    pass


class StorageUnavailable(RuntimeError):
    """The store cannot be reached or written (a full or read-only disk, an S3 outage): try again later."""


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Turn an outage of the store into StorageUnavailable; a missing blob stays BlobNotFound."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BlobNotFound, ValueError):
        raise
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise
        raise StorageUnavailable(f"{what}: {exc.response.get('Error', {}).get('Code', 'error')}") from exc
    except (OSError, BotoCoreError) as exc:
        raise StorageUnavailable(f"{what}: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    modified: datetime  # UTC: when its bytes were last written


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

    @abstractmethod
    def list_blobs(self, prefix: str) -> Iterator[StoredBlob]:
        """Every blob under the folder `prefix` (`tenants/`), in no set order. The local folder lists the
        temporaries of interrupted writes too (`.tmp-…` names)."""

    def presigned_url(self, key: str, *, expires_in: int, filename: str, media_type: str) -> str | None:
        """A URL the store itself serves for `expires_in` seconds, or None when it cannot (the local folder:
        the API then signs its own link)."""
        return None


def original_key(tenant_id: int, sha256: str, image_uuid: str) -> str:
    """One key per image, not per content: erasing an image deletes only its own file, even while the same
    bytes are uploaded again (a key shared by content could be deleted under the new image). A registration
    that did not commit leaves its file behind, for `sweep_orphan_blobs`."""
    return f"tenants/{tenant_id}/originals/{sha256[:2]}/{sha256}-{image_uuid}"


def thumbnail_key(tenant_id: int, image_id: int) -> str:
    return f"tenants/{tenant_id}/thumbnails/{image_id}.jpg"


# Keys the product makes (`tenants/3/originals/ab/ab…`): relative, every segment starting with a letter or
# digit, so no `..`, no hidden or absolute part. Other keys are checked by resolving the path.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][\w.=-]*(?:/[A-Za-z0-9][\w.=-]*)*", re.ASCII)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        if _PLAIN_KEY.fullmatch(key):  # the upload's hot path: no file-system calls to check it
            return self.root / key
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        """Written aside and renamed, durably (`durable.write_file`): a reader never sees half a file, and
        the catalog, which commits its row right after, never points at a file a power loss took back (or
        left only as a `.tmp-` name, which the orphan sweep deletes)."""
        path = self._path(key)
        with _store_errors("writing a file"):
            durable.write_file(path, data)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with _store_errors("reading a file"):
                return path.read_bytes()
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise BlobNotFound(key) from exc
            raise

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _store_errors("deleting a file"):
            durable.remove(path)  # an erased original does not come back after a crash

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with _store_errors("looking for a file"):
            return path.is_file()

    def list_blobs(self, prefix: str) -> Iterator[StoredBlob]:
        """Regular files only: a link is neither followed nor listed (the walk stays inside the folder)."""
        with _store_errors("listing files"):
            for folder, _, names in os.walk(self._path(prefix.rstrip("/") or ".")):
                for name in names:
                    path = Path(folder, name)
                    try:
                        found = path.lstat()
                    except OSError:  # deleted since the folder was read, or unreadable: not ours to judge
                        continue
                    if stat.S_ISREG(found.st_mode):
                        yield StoredBlob(path.relative_to(self.root).as_posix(), found.st_size,
                                         datetime.fromtimestamp(found.st_mtime, UTC))


class S3BlobStore(BlobStore):
    """Objects under `s3://<bucket>/<prefix><key>`.

    Made from the client's settings (`s3_client` arguments), so it pickles: the pipeline's worker processes
    each make their own boto3 client.
    """

    def __init__(self, bucket: str, prefix: str = "", **client_settings):
        self.bucket, self.client_settings = bucket, client_settings
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(**self.client_settings)
        return self._client

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        with _store_errors("writing an object"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            with _store_errors("reading an object"):
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:  # only a missing object gets through _store_errors
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        with _store_errors("deleting an object"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with _store_errors("looking for an object"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError:  # only a missing object gets through _store_errors
            return False

    def list_blobs(self, prefix: str) -> Iterator[StoredBlob]:
        with _store_errors("listing objects"):
            for item in iter_s3_objects(self.client, self.bucket, self._key(prefix.rstrip("/") + "/")):
                yield StoredBlob(item["Key"][len(self.prefix):], item["Size"], item["LastModified"])

    def presigned_url(self, key: str, *, expires_in: int, filename: str, media_type: str) -> str | None:
        return self.client.generate_presigned_url("get_object", ExpiresIn=expires_in, Params={
            "Bucket": self.bucket, "Key": self._key(key), "ResponseContentType": media_type,
            "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename)}"})


def s3_client(*, endpoint_url: str | None, region: str, access_key_id: str | None, secret_access_key: str | None):
    """A boto3 S3 client: 5 attempts with backoff on throttling and 5xx, and Signature V4 everywhere,
    presigned URLs included (botocore may presign with the legacy V2 otherwise)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}))


def iter_s3_objects(client, bucket: str, prefix: str) -> Iterator[dict]:
    """Every object under `prefix` ({"Key", "Size", "LastModified", …}), in key order, page by page."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _s3_settings(settings) -> dict:
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    return dict(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                access_key_id=settings.s3_access_key_id, secret_access_key=secret)


def s3_client_for(settings):
    """A boto3 client for the configured S3 endpoint and credentials."""
    return s3_client(**_s3_settings(settings))


def build_blob_store(settings) -> BlobStore:
    """The one factory of the configured store: the local folder, or S3 when `IMAGO_BLOB_BACKEND=s3`."""
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.blob_root)
    return S3BlobStore(settings.s3_bucket, settings.s3_prefix, **_s3_settings(settings))
