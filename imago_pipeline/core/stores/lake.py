"""The Parquet lake: one dataset per table under `<root>/<table>/`, hive-partitioned by tenant and date.

Each batch writes one file per (tenant, date) it touches, named after the run, so files are batch-sized
and a re-run of the same batch replaces its own files instead of duplicating rows. Files are written
aside as `.tmp-…` and renamed, so readers match `*/*/part-*.parquet` (`imago sql` registers every table as
a view that also keeps the newest row per image: `core/analytics/sources.py`). Compaction
(`core/analytics/compaction.py`) folds batch files into one file per tenant and month, listed in the
table's manifest; files are rewritten (erasure, retention, compaction) under the table's lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
MANIFEST = "_manifest.json"  # a compacted table's manifest (`core/analytics/compaction.py`)
COMPACTED_DIR = "_compacted"


@dataclass
class Manifest:
    """Which compacted files hold a table's rows and which batch files they already hold (each with the
    mtime and size it had then: a file rewritten since is new work). Written by compaction; erasure and
    retention keep it true when they rewrite a folded file."""

    generation: int = 0
    compacted: dict[str, str] = field(default_factory=dict)  # "tenant/YYYY-MM" -> relative path
    folded: dict[str, list[int]] = field(default_factory=dict)  # relative tail path -> [mtime_ns, size]
    retired: list[tuple[str, float]] = field(default_factory=list)  # (relative path, since) to delete later
    changed: bool = False

    @classmethod
    def load(cls, table_dir: Path) -> Manifest:
        path = table_dir / MANIFEST
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(data["generation"], data["compacted"], data["folded"],
                   [(p, float(s)) for p, s in data.get("retired", [])])

    def save(self, table_dir: Path) -> None:
        tmp = table_dir / f".tmp-{MANIFEST}"
        tmp.write_text(json.dumps({"generation": self.generation, "compacted": self.compacted,
                                   "folded": self.folded, "retired": self.retired}))
        os.replace(tmp, table_dir / MANIFEST)
        self.changed = False

    def save_if_changed(self, table_dir: Path) -> None:
        if self.changed and (table_dir / MANIFEST).is_file():
            self.save(table_dir)

    def is_folded(self, table_dir: Path, relative: str) -> bool:
        """Folded into a compacted file and not rewritten since."""
        stamp = self.folded.get(relative)
        return stamp is not None and file_stamp(table_dir / relative) == stamp


def file_stamp(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_mtime_ns, stat.st_size]




class Lake:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def table_path(self, table: str) -> Path:
        if not _SAFE_NAME.match(table):
            raise ValueError(f"bad lake table name {table!r}")
        return self.root / table

    @contextmanager
    def lock(self, table: str) -> Iterator[None]:
        """Exclusive use of a table for rewriting its files: compaction (`analytics/compaction.py`), erasure and
        retention take it, so a compaction never folds a file an erasure is rewriting. Writers of new
        batch files do not: a new file is simply not part of a running compaction."""
        locks = self.root / ".locks"  # beside the tables: a whole-table swap must not move its own lock
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{self.table_path(table).name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def write_batch(
        self, table: str, rows: Iterable[dict[str, Any]], *, batch_id: str, schema: pa.Schema | None = None
    ) -> list[Path]:
        """Write rows (each with `tenant_id` and a `date` key) as one file per hive partition."""
        return self._write_into(self.table_path(table), rows, batch_id, schema)

    def _write_into(self, base: Path, rows: Iterable[dict[str, Any]], batch_id: str,
                    schema: pa.Schema | None) -> list[Path]:
        if not _SAFE_NAME.match(batch_id):
            raise ValueError(f"bad batch id {batch_id!r}")
        groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            day = row["date"]
            day = day.isoformat() if isinstance(day, (date, datetime)) else str(day)
            groups[(int(row["tenant_id"]), day[:10])].append(row)
        written = []
        for (tenant_id, day), group in sorted(groups.items()):
            folder = base / f"tenant_id={tenant_id}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            records = [{k: v for k, v in row.items() if k not in ("tenant_id", "date")} for row in group]
            arrow = pa.Table.from_pylist(records, schema=schema)
            target = folder / f"part-{batch_id}.parquet"
            tmp = folder / f".tmp-{batch_id}.parquet"
            pq.write_table(arrow, tmp, compression="zstd")
            os.replace(tmp, target)  # readers see the whole file or none of it
            written.append(target)
        return written

    def replace_table(self, table: str, rows: Iterable[dict[str, Any]], *, schema: pa.Schema) -> list[Path]:
        """Rewrite a whole (small) table: written aside, then swapped in, so readers never see half of it."""
        final = self.table_path(table)
        staging = final.with_name(f".{table}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        files = self._write_into(staging, rows, "snapshot", schema)
        old = final.with_name(f".{table}.old")
        shutil.rmtree(old, ignore_errors=True)
        with self.lock(table):  # not while a compaction or an erasure rewrites its files
            if final.exists():
                os.replace(final, old)
            if staging.exists():
                os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        return [final / f.relative_to(staging) for f in files]

    def tables(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _SAFE_NAME.match(p.name)) \
            if self.root.is_dir() else []

    def delete_rows(self, table: str, column: str, values: Iterable[Any], *, tenant_id: int | None = None) -> int:
        """Remove the rows whose `column` is in `values` (erasure, retention) and return how many went.

        Only files that can hold a match are read (Parquet min/max statistics); each affected file is
        rewritten aside and swapped in, or removed when nothing is left, so readers never see half a file.
        """
        wanted = set(values)
        if not wanted:
            return 0
        base = self.table_path(table)
        folder = base / f"tenant_id={tenant_id}" if tenant_id is not None else base
        removed = 0
        if not folder.is_dir():
            return 0
        with self.lock(table):  # compacted files (`tenant_id=T/_compacted/`) are reached like batch files
            manifest = Manifest.load(base)
            for path in sorted(folder.glob("**/*.parquet")):
                if path.name.startswith(".") or not _may_contain(path, column, wanted):
                    continue
                data = pq.read_table(path, partitioning=None)
                keep = pc.invert(pc.is_in(data[column], value_set=pa.array(sorted(wanted), type=data[column].type)))
                kept = data.filter(pc.fill_null(keep, True))
                if kept.num_rows == data.num_rows:
                    continue
                if not _rewrite_keeping_folded(base, manifest, path, kept):
                    removed += data.num_rows - kept.num_rows
            manifest.save_if_changed(base)
        return removed

    def delete_before(self, table: str, column: str, cutoff: datetime) -> int:
        """Remove the rows whose timestamp `column` is before `cutoff` (retention); returns how many went."""
        return self._filter_files(table, column, cutoff, delete=True)

    def count_before(self, table: str, column: str, cutoff: datetime) -> int:
        return self._filter_files(table, column, cutoff, delete=False)

    def _filter_files(self, table: str, column: str, cutoff: datetime, *, delete: bool) -> int:
        base = self.table_path(table)
        matched = 0
        if not base.is_dir():
            return 0
        with self.lock(table):
            manifest = Manifest.load(base)
            for path in sorted(base.glob("**/*.parquet")):
                if path.name.startswith(".") or not _may_be_before(path, column, cutoff):
                    continue
                data = pq.read_table(path, partitioning=None)
                old = pc.fill_null(pc.less(data[column], pa.scalar(cutoff, type=data[column].type)), False)
                count = pc.sum(old).as_py() or 0
                if manifest.is_folded(base, str(path.relative_to(base))):
                    count_here = 0  # its rows are counted in the compacted file that holds them
                else:
                    count_here = count
                matched += count_here
                if not delete or count == 0:
                    continue
                _rewrite_keeping_folded(base, manifest, path, data.filter(pc.invert(old)))
            manifest.save_if_changed(base)
        return matched


def _rewrite_keeping_folded(base: Path, manifest: Manifest, path: Path, kept: pa.Table) -> bool:
    """`_rewrite`, and a file already folded into a compacted file stays folded (its new stamp recorded),
    so readers still skip it. Returns whether it was folded (its rows are counted elsewhere)."""
    relative = str(path.relative_to(base))
    folded = manifest.is_folded(base, relative)
    _rewrite(path, kept)
    if folded:
        stamp = file_stamp(path)
        if stamp is None:
            manifest.folded.pop(relative, None)
        else:
            manifest.folded[relative] = stamp
        manifest.changed = True
    return folded


def _rewrite(path: Path, kept: pa.Table) -> None:
    """Replace a file by the rows kept (written aside, then swapped in), or remove it when none are."""
    if kept.num_rows == 0:
        path.unlink()
        return
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(kept, tmp, compression="zstd")
    os.replace(tmp, path)


def _may_be_before(path: Path, column: str, cutoff: datetime) -> bool:
    return any(low is None or (low if low.tzinfo else low.replace(tzinfo=cutoff.tzinfo)) < cutoff
               for low, _ in _row_group_ranges(path, column))


def _may_contain(path: Path, column: str, wanted: set[Any]) -> bool:
    """False only when the file's statistics prove no row has a wanted value (or it has no such column)."""
    low, high = min(wanted), max(wanted)
    return any(least is None or not (most < low or least > high) for least, most in _row_group_ranges(path, column))


def _row_group_ranges(path: Path, column: str) -> Iterable[tuple[Any, Any]]:
    """(min, max) of `column` per row group from the Parquet footer, (None, None) where unknown; nothing
    when the file has no such column."""
    metadata = pq.read_metadata(path)
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    if column not in names:
        return
    index = names.index(column)
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        yield (stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None)
