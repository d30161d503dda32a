"""Where bulk drops arrive: a local folder or an S3 prefix, behind one interface.

A drop source lists what has arrived (`pending`), hands over each item's bytes, and files the item away
afterwards: under `.imported/<day>/` when it was registered, under `.rejected/<day>/` with a `.reason.txt`
next to it when it was not an acceptable image. Hidden names (starting with `.`) are never taken, so what
is filed away is never taken twice.

An item carries the version it was listed at (a file's inode, size and modification time; an object's
ETag): one replaced after it was listed is neither read nor filed as that version (`ItemChanged`), so new
content dropped under the same name is taken on the next look, never archived unregistered. Filing never
overwrites (a name taken, or too long for the file system, gets a unique one) and a symbolic link in the
drop folder is refused, not followed.
"""

from __future__ import annotations

import errno
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


class ItemChanged(Exception):
    """The item is gone, or was replaced since it was listed: leave it to the next look."""


@dataclass(frozen=True)
class DropItem:
    key: str  # a path relative to the folder, or the object's key relative to the prefix
    name: str  # the file name, shown to people
    size: int
    version: tuple = ()  # (inode, size, mtime_ns) of a file, (ETag,) of an object
    refused: str | None = None  # why it is filed as rejected without being read (a symbolic link)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


NAME_BYTES = 255 - len(".reason.txt")  # a file name, with room for its reason's name beside it


def _fitting(name: str, unique: str = "") -> str:
    """`name` (with `-unique` before its suffix) cut to fit a file system's 255-byte names."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 16:
        stem, suffix = name, ""
    suffix = f".{suffix}" if suffix else ""
    tail = (f"-{unique}" if unique else "") + suffix
    room = NAME_BYTES - len(tail.encode())
    return stem.encode()[:room].decode("utf-8", errors="ignore") + tail


class DropSource(ABC):
    items: str  # what it holds ("files", "objects"), for messages
    nothing_new: str  # what to say when nothing has arrived

    @abstractmethod
    def pending(self, limit: int) -> list[DropItem]: ...

    @abstractmethod
    def read(self, item: DropItem) -> bytes:
        """The item's bytes as listed; `ItemChanged` when it is gone or was replaced since."""

    @abstractmethod
    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        """Move the item under `.imported/<day>/`, or `.rejected/<day>/` with the reason beside it;
        `ItemChanged` (nothing moved) when it was replaced since it was listed."""


class FolderDrop(DropSource):
    """A watched folder. A file is taken once it has not changed for `settle_s` seconds, so a half-copied
    file is not read."""

    def __init__(self, root: Path, settle_s: float = 2.0):
        self.root, self.settle_s = root, settle_s
        self.items, self.nothing_new = "files", "no settled files in the drop folder"

    def pending(self, limit: int) -> list[DropItem]:
        if not self.root.is_dir():
            return []
        now = time.time()
        items = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            if _hidden(relative):
                continue
            try:
                stat = path.lstat()
            except FileNotFoundError:  # removed while listed
                continue
            if path.is_symlink():  # to a file or dangling: it would pull in whatever it points at
                if now - stat.st_mtime >= self.settle_s:
                    items.append(DropItem(relative, path.name, 0, _version(stat),
                                          refused="a symbolic link: the drop folder takes files, not links"))
            elif path.is_file() and now - stat.st_mtime >= self.settle_s:
                items.append(DropItem(relative, path.name, stat.st_size, _version(stat)))
            if len(items) == limit:
                break
        return items

    def read(self, item: DropItem) -> bytes:
        try:
            with open(self.root / item.key, "rb", opener=_no_follow) as handle:
                if _version(os.fstat(handle.fileno())) != item.version:
                    raise ItemChanged(item.key)
                return handle.read()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ItemChanged(item.key) from exc

    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        source = self.root / item.key
        try:
            if _version(source.lstat()) != item.version:
                raise ItemChanged(item.key)
        except FileNotFoundError as exc:
            raise ItemChanged(item.key) from exc
        day = self.root / (".rejected" if rejected_because is not None else ".imported") / _today()
        target = self._free(day, item.key)
        os.rename(source, target)  # the same file system: atomic, and a link moves as a link
        if rejected_because is not None:
            target.with_name(target.name + ".reason.txt").write_text(rejected_because + "\n")

    @staticmethod
    def _free(day: Path, key: str) -> Path:
        """Where to file `key` under `day`: its own path when free and valid, else a unique flat name (a
        name taken, a file where its folder would be, a name too long)."""
        parts = key.split("/")
        target = day.joinpath(*parts[:-1], _fitting(parts[-1]))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() and not target.is_symlink():
                return target
        except OSError as exc:  # a file named like one of its folders, or a path too long
            if exc.errno not in (errno.EEXIST, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise
        day.mkdir(parents=True, exist_ok=True)
        return day / _fitting(parts[-1], f"{time.time_ns()}")


def _version(stat: os.stat_result) -> tuple:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


class S3Drop(DropSource):
    """An S3 prefix (`s3://bucket/prefix/`). An object is visible only once completely written, so there is
    no settle time; filing it is a copy (only of the version listed) and a delete."""

    KEY_BYTES = 1024  # S3's longest key

    def __init__(self, client, uri: str):
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        self.client, self.bucket = client, bucket
        self.prefix = (prefix.rstrip("/") + "/") if prefix else ""
        self.items, self.nothing_new = "objects", f"nothing under s3://{bucket}/{self.prefix}"

    def pending(self, limit: int) -> list[DropItem]:
        from imago_pipeline.core.stores.blobs import iter_s3_objects

        items = []
        for obj in iter_s3_objects(self.client, self.bucket, self.prefix):
            relative = obj["Key"][len(self.prefix):]
            if not obj["Key"].endswith("/") and not _hidden(relative):
                items.append(DropItem(relative, relative.rsplit("/", 1)[-1], obj["Size"], (obj.get("ETag"),)))
                if len(items) == limit:
                    break
        return items

    def read(self, item: DropItem) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + item.key,
                                          **self._if_match("IfMatch", item))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise ItemChanged(item.key) from exc
        except self.client.exceptions.ClientError as exc:
            if _s3_code(exc) in ("PreconditionFailed", "NoSuchKey", "404"):
                raise ItemChanged(item.key) from exc
            raise

    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        folder = ".rejected" if rejected_because is not None else ".imported"
        target = self._free(f"{self.prefix}{folder}/{_today()}/", item.key)
        try:
            self.client.copy_object(Bucket=self.bucket, Key=target,
                                    CopySource={"Bucket": self.bucket, "Key": self.prefix + item.key},
                                    **self._if_match("CopySourceIfMatch", item))
        except self.client.exceptions.ClientError as exc:
            if _s3_code(exc) in ("PreconditionFailed", "NoSuchKey", "404"):
                raise ItemChanged(item.key) from exc
            raise
        if item.version and item.version[0] and self._etag(self.prefix + item.key) != item.version[0]:
            # replaced meanwhile (a server ignoring CopySourceIfMatch copied the new version): not filed
            self.client.delete_object(Bucket=self.bucket, Key=target)
            raise ItemChanged(item.key)
        if rejected_because is not None:
            self.client.put_object(Bucket=self.bucket, Key=target + ".reason.txt",
                                   Body=(rejected_because + "\n").encode())
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + item.key)

    def _free(self, folder: str, key: str) -> str:
        """`folder` + `key` when no object has that key and it fits S3's key length, else a unique key."""
        target = folder + key
        if len((target + ".reason.txt").encode()) <= self.KEY_BYTES and not self._exists(target):
            return target
        return folder + _fitting(key.rsplit("/", 1)[-1], f"{time.time_ns()}")

    def _exists(self, key: str) -> bool:
        return self._etag(key) is not None

    def _etag(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except self.client.exceptions.ClientError as exc:
            if _s3_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    @staticmethod
    def _if_match(parameter: str, item: DropItem) -> dict:
        return {parameter: item.version[0]} if item.version and item.version[0] else {}


def _s3_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
