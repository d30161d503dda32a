"""Where the lake's files live: a local (or shared) folder, or an S3 prefix every machine can reach.

The lake (`lake.py`), its compaction and its SQL sources name files by paths relative to the lake's root
(`exif/tenant_id=1/date=2026-11-28/part-run.parquet`) and do every file operation through one of these two
classes. Writes are atomic for readers on both: a local file is written aside and renamed (and synced, so it
survives a crash as well: `durable`), an S3 object appears whole when its upload completes. DuckDB reads a
local lake directly and an S3 lake through pyarrow's S3 filesystem registered with it as an fsspec filesystem
(`register`): DuckDB's own `httpfs` extension would be downloaded at run time, which this product never does.

Rewriting a table's files (compaction, erasure, retention) takes the table's lock: a file lock on a local
lake; on S3, where machines share no file system, a Postgres advisory lock on the catalog's database (an S3
lake on a SQLite catalog is one machine, and falls back to a file lock beside the catalog).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from imago_pipeline.core.stores import durable

DUCKDB_PROTOCOL = "imagolake"  # how DuckDB names the registered S3 filesystem (not s3://: that is httpfs's)


class LakeFiles(ABC):
    """File operations on paths relative to the lake's root ('/'-separated)."""

    #: a readable name for messages and metadata
    location: str

    @abstractmethod
    def uri(self, relative: str) -> str:
        """The name DuckDB and pyarrow read the file by (after `register` on a DuckDB connection)."""

    def register(self, con) -> None:  # noqa: B027 (a local lake needs nothing registered)
        """Make `uri` names readable and writable by a DuckDB connection."""

    def allowed_prefix(self) -> str:
        """What a locked-down DuckDB connection may still read (`allowed_directories`)."""
        return self.uri("").rstrip("/") + "/"

    @abstractmethod
    def glob(self, pattern: str) -> list[str]:
        """Relative paths of the files matching `pattern` (`*` within a segment, `**` any depth), sorted;
        hidden names (written aside) never match."""

    def any_match(self, pattern: str) -> bool:
        return bool(self.glob(pattern))

    @abstractmethod
    def stamp(self, relative: str) -> list[int] | None:
        """[modification time in ns, size]: a file rewritten since has another stamp. None when absent."""

    def exists(self, relative: str) -> bool:
        return self.stamp(relative) is not None

    @abstractmethod
    def has_files(self, relative: str) -> bool:
        """Whether anything lives under the folder `relative`."""

    @abstractmethod
    def read_table(self, relative: str) -> pa.Table: ...

    @abstractmethod
    def read_metadata(self, relative: str) -> pq.FileMetaData: ...

    @abstractmethod
    def write_table(self, table: pa.Table, relative: str) -> None:
        """Write a Parquet file (zstd) that readers see whole or not at all."""

    @abstractmethod
    def read_text(self, relative: str) -> str | None: ...

    @abstractmethod
    def write_text(self, relative: str, text: str) -> None:
        """Replace a small text file atomically."""

    @abstractmethod
    def delete(self, relative: str) -> None:
        """Remove a file; a missing one is fine."""

    @abstractmethod
    def delete_tree(self, relative: str) -> None: ...

    @abstractmethod
    def staging_name(self, relative: str) -> str:
        """Where a writer that is not atomic by itself (DuckDB's COPY) writes before `publish`."""

    @abstractmethod
    def publish(self, staged: str, relative: str) -> None:
        """Make the staged file the file at `relative`, atomically for readers."""

    @abstractmethod
    def lock(self, name: str) -> AbstractContextManager[None]:
        """Exclusive use of `name` (a table) among every process and machine using this lake."""

    @abstractmethod
    def swap_tree(self, staged: str, relative: str) -> None:
        """Replace the folder `relative` by the folder `staged` (a snapshot table rewritten whole)."""


class LocalLakeFiles(LakeFiles):
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)

    def path(self, relative: str) -> Path:
        return self.root / relative if relative else self.root

    def uri(self, relative: str) -> str:
        return str(self.path(relative))

    def glob(self, pattern: str) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob(pattern) if not p.name.startswith("."))

    def any_match(self, pattern: str) -> bool:  # stops at the first file: a table of 100,000 files is not listed
        return self.root.is_dir() and any(not p.name.startswith(".") for p in self.root.glob(pattern))

    def stamp(self, relative: str) -> list[int] | None:
        try:
            stat = self.path(relative).stat()
        except FileNotFoundError:
            return None
        return [stat.st_mtime_ns, stat.st_size]

    def has_files(self, relative: str) -> bool:
        folder = self.path(relative)
        return folder.is_dir() and any(folder.iterdir())

    def read_table(self, relative: str) -> pa.Table:
        return pq.read_table(self.path(relative), partitioning=None)

    def read_metadata(self, relative: str) -> pq.FileMetaData:
        return pq.read_metadata(self.path(relative))

    def write_table(self, table: pa.Table, relative: str) -> None:
        target = self.path(relative)
        durable.make_folders(target.parent)
        aside = durable.temporary_name(target)
        try:
            pq.write_table(table, aside, compression="zstd")
            durable.replace(aside, target)
        except BaseException:
            aside.unlink(missing_ok=True)
            raise

    def read_text(self, relative: str) -> str | None:
        try:
            return self.path(relative).read_text()
        except FileNotFoundError:
            return None

    def write_text(self, relative: str, text: str) -> None:
        durable.write_file(self.path(relative), text.encode())

    def delete(self, relative: str) -> None:
        durable.remove(self.path(relative))

    def delete_tree(self, relative: str) -> None:
        shutil.rmtree(self.path(relative), ignore_errors=True)

    def staging_name(self, relative: str) -> str:
        head, _, name = relative.rpartition("/")
        durable.make_folders(self.path(relative).parent)
        return f"{head}/.tmp-{name}" if head else f".tmp-{name}"

    def publish(self, staged: str, relative: str) -> None:
        durable.replace(self.path(staged), self.path(relative))

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        with durable.file_lock(self.root / ".locks" / f"{name}.lock"):
            yield

    def swap_tree(self, staged: str, relative: str) -> None:
        """The staged folder's files were written by `write_table`, each synced. Where both folders exist they
        are exchanged in one step, so a reader never finds the table missing; an emptied table (nothing
        staged) is removed."""
        final, new = self.path(relative), self.path(staged)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists() and new.exists() and durable.exchange(new, final):
            old = new  # the previous table, now under the staged name
        else:
            if final.exists():
                os.replace(final, old)
            if new.exists():
                os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
        durable.sync_folder(final.parent)  # the swap and the old rows' removal, durable together


class S3LakeFiles(LakeFiles):
    """The lake under `s3://<bucket>/<prefix>` through pyarrow's S3 filesystem."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
                 access_key: str | None = None, secret_key: str | None = None,
                 lock: Callable[[str], AbstractContextManager[None]] | None = None):
        from pyarrow import fs

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}"
        options: dict[str, Any] = {"region": region, "allow_bucket_creation": False}
        if endpoint_url:
            scheme, _, host = endpoint_url.partition("://")
            options.update(endpoint_override=host or endpoint_url, scheme=scheme if host else "https")
        if access_key:
            options.update(access_key=access_key, secret_key=secret_key)
        self.fs = fs.S3FileSystem(**options)
        self._lock = lock
        self._root = f"{bucket}/{self.prefix}" if self.prefix else bucket

    def key(self, relative: str) -> str:
        return f"{self._root}/{relative}" if relative else self._root

    def uri(self, relative: str) -> str:
        return f"{DUCKDB_PROTOCOL}://{self.key(relative)}"

    def register(self, con) -> None:
        con.register_filesystem(_duckdb_filesystem(self.fs))

    def _infos(self, folder: str):
        from pyarrow import fs

        return self.fs.get_file_info(fs.FileSelector(self.key(folder), recursive=True, allow_not_found=True))

    def glob(self, pattern: str) -> list[str]:
        fixed = []
        for part in pattern.split("/"):
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        start = len(self._root) + 1
        found = []
        for info in self._infos("/".join(fixed)):
            relative = info.path[start:]
            if info.is_file and not info.base_name.startswith(".") and _matches(relative, pattern):
                found.append(relative)
        return sorted(found)

    def stamp(self, relative: str) -> list[int] | None:
        from pyarrow import fs

        info = self.fs.get_file_info(self.key(relative))
        if info.type != fs.FileType.File:
            return None
        return [int(info.mtime_ns or 0), int(info.size or 0)]

    def has_files(self, relative: str) -> bool:
        return any(info.is_file for info in self._infos(relative))

    def read_table(self, relative: str) -> pa.Table:
        return pq.read_table(self.key(relative), filesystem=self.fs, partitioning=None)

    def read_metadata(self, relative: str) -> pq.FileMetaData:
        with self.fs.open_input_file(self.key(relative)) as handle:
            return pq.read_metadata(handle)

    def write_table(self, table: pa.Table, relative: str) -> None:
        pq.write_table(table, self.key(relative), filesystem=self.fs, compression="zstd")

    def read_text(self, relative: str) -> str | None:
        try:
            with self.fs.open_input_stream(self.key(relative)) as handle:
                return handle.read().decode()
        except FileNotFoundError:
            return None

    def write_text(self, relative: str, text: str) -> None:
        with self.fs.open_output_stream(self.key(relative)) as handle:
            handle.write(text.encode())

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.key(relative))
        except FileNotFoundError:
            pass

    def delete_tree(self, relative: str) -> None:
        for info in self._infos(relative):
            if info.is_file:
                self.fs.delete_file(info.path)

    def staging_name(self, relative: str) -> str:
        head, _, name = relative.rpartition("/")
        return f"{head}/.tmp-{name}" if head else f".tmp-{name}"

    def publish(self, staged: str, relative: str) -> None:
        """A server-side copy (the new object appears whole), then the staged one goes."""
        self.fs.copy_file(self.key(staged), self.key(relative))
        self.fs.delete_file(self.key(staged))

    def lock(self, name: str) -> AbstractContextManager[None]:
        if self._lock is None:
            raise RuntimeError("an S3 lake needs a lock shared by every machine (see lake_files_for)")
        return self._lock(f"{self.location}/{name}")

    def swap_tree(self, staged: str, relative: str) -> None:
        """Objects cannot be renamed: the staged files are copied over, then the files not replaced go. A
        reader listing the folder between the two sees the new files and some old ones."""
        start = len(self.key(staged)) + 1
        new = set()
        for info in self._infos(staged):
            if info.is_file:
                name = info.path[start:]
                self.fs.copy_file(info.path, self.key(f"{relative}/{name}"))
                new.add(name)
        start = len(self.key(relative)) + 1
        for info in self._infos(relative):
            if info.is_file and info.path[start:] not in new:
                self.fs.delete_file(info.path)
        self.delete_tree(staged)


def _matches(relative: str, pattern: str) -> bool:
    """fnmatch per path segment, `**` for any number of segments."""
    parts, wanted = relative.split("/"), pattern.split("/")

    def walk(i: int, j: int) -> bool:
        if j == len(wanted):
            return i == len(parts)
        if wanted[j] == "**":
            return any(walk(k, j + 1) for k in range(i, len(parts) + 1))
        return i < len(parts) and fnmatch.fnmatchcase(parts[i], wanted[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def _duckdb_filesystem(s3):
    """pyarrow's S3 filesystem as the fsspec filesystem DuckDB accepts, under its own protocol name."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class LakeFileSystem(ArrowFSWrapper):
        protocol = DUCKDB_PROTOCOL
        root_marker = ""

        @classmethod
        def _strip_protocol(cls, path):
            path = path[0] if isinstance(path, list) else path
            return path.removeprefix(f"{DUCKDB_PROTOCOL}://").rstrip("/")

    return LakeFileSystem(s3)


def postgres_lock(database_url: str) -> Callable[[str], AbstractContextManager[None]]:
    """Locks shared by every machine that reaches the catalog's Postgres: session advisory locks, released
    when the block ends or when the holder's connection dies (a killed process never leaves one behind)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(database_url, poolclass=NullPool)

    @contextmanager
    def lock(name: str) -> Iterator[None]:
        number = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:n)"), {"n": number})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": number})
                connection.commit()

    return lock


def file_lock(folder: Path) -> Callable[[str], AbstractContextManager[None]]:
    def lock(name: str) -> AbstractContextManager[None]:
        return durable.file_lock(folder / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock"))

    return lock


def lake_files_for(settings, location: str | None = None) -> LakeFiles:
    """The configured lake (`IMAGO_LAKE_URI` or the lake folder), or the one at `location`; an S3 lake
    uses the blob store's endpoint and credentials, and locks through the catalog's Postgres."""
    location = location or settings.lake_location
    if not location.startswith("s3://"):
        return LocalLakeFiles(location)
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    url = settings.catalog_url
    lock = postgres_lock(url) if url.startswith("postgres") else file_lock(settings.resolved_home / "locks")
    return S3LakeFiles(bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                       access_key=settings.s3_access_key_id, secret_key=secret, lock=lock)
