"""Where bulk drops arrive: a local folder or an S3 prefix, behind one interface.

A drop source lists what has arrived (`pending`), hands over each item's bytes, and files the item away
afterwards: under `.imported/<day>/` when it was registered, under `.rejected/<day>/` with a `.reason.txt`
next to it when it was not an acceptable image. Hidden names (starting with `.`) are never taken, so what
is filed away is never taken twice.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class DropItem:
    key: str  # a path relative to the folder, or the object's key relative to the prefix
    name: str  # the file name, shown to people
    size: int


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


class DropSource(ABC):
    items: str  # what it holds ("files", "objects"), for messages
    nothing_new: str  # what to say when nothing has arrived

    @abstractmethod
    def pending(self, limit: int) -> list[DropItem]: ...

    @abstractmethod
    def read(self, item: DropItem) -> bytes: ...

    @abstractmethod
    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        """Move the item under `.imported/<day>/`, or `.rejected/<day>/` with the reason beside it."""


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
            if path.is_file() and not _hidden(relative):
                stat = path.stat()
                if now - stat.st_mtime >= self.settle_s:
                    items.append(DropItem(relative, path.name, stat.st_size))
        return items[:limit]

    def read(self, item: DropItem) -> bytes:
        return (self.root / item.key).read_bytes()

    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        folder = ".rejected" if rejected_because is not None else ".imported"
        target = self.root / folder / _today() / item.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{target.stem}-{int(time.time() * 1000)}{target.suffix}")
        shutil.move(str(self.root / item.key), target)
        if rejected_because is not None:
            target.with_name(target.name + ".reason.txt").write_text(rejected_because + "\n")


class S3Drop(DropSource):
    """An S3 prefix (`s3://bucket/prefix/`). An object is visible only once completely written, so there is
    no settle time; filing it is a copy and a delete."""

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
                items.append(DropItem(relative, relative.rsplit("/", 1)[-1], obj["Size"]))
                if len(items) == limit:
                    break
        return items

    def read(self, item: DropItem) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + item.key)["Body"].read()

    def file(self, item: DropItem, *, rejected_because: str | None = None) -> None:
        folder = ".rejected" if rejected_because is not None else ".imported"
        target = f"{self.prefix}{folder}/{_today()}/{item.key}"
        if rejected_because is not None:
            self.client.put_object(Bucket=self.bucket, Key=target + ".reason.txt",
                                   Body=(rejected_because + "\n").encode())
        self.client.copy_object(Bucket=self.bucket, Key=target,
                                CopySource={"Bucket": self.bucket, "Key": self.prefix + item.key})
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + item.key)
