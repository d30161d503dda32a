"""The Parquet lake: one dataset per table under `<root>/<table>/`, hive-partitioned by tenant and date.
The root is a local (or shared) folder or an S3 prefix (`lake_files.py`).

Each batch writes one file per (tenant, date) it touches, named after the run, so files are batch-sized
and a re-run of the same batch replaces its own files instead of duplicating rows. Files appear whole (a
local file is written aside as `.tmp-…` and renamed), so readers match `*/*/part-*.parquet` (`imago sql`
registers every table as a view that also keeps the newest row per image: `core/analytics/sources.py`). Compaction
(`core/analytics/compaction.py`) folds batch files into one file per tenant and month, listed in the
table's manifest; files are rewritten (erasure, retention, compaction) under the table's lock.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Union

import pyarrow as pa
import pyarrow.compute as pc

from imago_pipeline.core.stores.lake_files import LakeFiles, LocalLakeFiles

LakeRoot = Union["Lake", LakeFiles, Path, str]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
MANIFEST = "_manifest.json"  # a compacted table's manifest (`core/analytics/compaction.py`)
COMPACTED_DIR = "_compacted"


def files_of(root: LakeRoot) -> LakeFiles:
    """The files of a lake named by its `Lake`, its `LakeFiles` or a local folder."""
    if isinstance(root, Lake):
        return root.files
    return root if isinstance(root, LakeFiles) else LocalLakeFiles(root)


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
    def load(cls, files: LakeFiles, table: str) -> Manifest:
        text = files.read_text(f"{table}/{MANIFEST}")
        if text is None:
            return cls()
        data = json.loads(text)
        return cls(data["generation"], data["compacted"], data["folded"],
                   [(p, float(s)) for p, s in data.get("retired", [])])

    def save(self, files: LakeFiles, table: str) -> None:
        files.write_text(f"{table}/{MANIFEST}", json.dumps({
            "generation": self.generation, "compacted": self.compacted, "folded": self.folded,
            "retired": self.retired}))
        self.changed = False

    def save_if_changed(self, files: LakeFiles, table: str) -> None:
        if self.changed and files.exists(f"{table}/{MANIFEST}"):
            self.save(files, table)

    def is_folded(self, files: LakeFiles, table: str, relative: str) -> bool:
        """Folded into a compacted file and not rewritten since (`relative` to the table's folder)."""
        stamp = self.folded.get(relative)
        return stamp is not None and files.stamp(f"{table}/{relative}") == stamp




class Lake:
    """The lake's tables, wherever its files live (`lake_files.py`: a folder, or an S3 prefix)."""

    def __init__(self, root: LakeRoot):
        self.files = files_of(root)

    @property
    def location(self) -> str:
        return self.files.location

    def table_path(self, table: str) -> str:
        """The table's folder, relative to the lake's root."""
        if not _SAFE_NAME.match(table):
            raise ValueError(f"bad lake table name {table!r}")
        return table

    def lock(self, table: str) -> AbstractContextManager[None]:
        """Exclusive use of a table for rewriting its files: compaction (`analytics/compaction.py`), erasure and
        retention take it, so a compaction never folds a file an erasure is rewriting. Writers of new
        batch files do not: a new file is simply not part of a running compaction."""
        return self.files.lock(self.table_path(table))

    def write_batch(
        self, table: str, rows: Iterable[dict[str, Any]], *, batch_id: str, schema: pa.Schema | None = None
    ) -> list[str]:
        """Write rows (each with `tenant_id` and a `date` key) as one file per hive partition; returns the
        files' paths relative to the lake's root."""
        return self._write_into(self.table_path(table), rows, batch_id, schema)

    def _write_into(self, base: str, rows: Iterable[dict[str, Any]], batch_id: str,
                    schema: pa.Schema | None) -> list[str]:
        if not _SAFE_NAME.match(batch_id):
            raise ValueError(f"bad batch id {batch_id!r}")
        groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            day = row["date"]
            day = day.isoformat() if isinstance(day, (date, datetime)) else str(day)
            groups[(int(row["tenant_id"]), day[:10])].append(row)
        written = []
        for (tenant_id, day), group in sorted(groups.items()):
            records = [{k: v for k, v in row.items() if k not in ("tenant_id", "date")} for row in group]
            target = f"{base}/tenant_id={tenant_id}/date={day}/part-{batch_id}.parquet"
            self.files.write_table(pa.Table.from_pylist(records, schema=schema), target)  # whole or nothing
            written.append(target)
        return written

    def replace_table(self, table: str, rows: Iterable[dict[str, Any]], *, schema: pa.Schema) -> list[str]:
        """Rewrite a whole (small) table: written aside, then swapped in (`LakeFiles.swap_tree`)."""
        final = self.table_path(table)
        staging = f".{table}.staging"
        self.files.delete_tree(staging)
        files = self._write_into(staging, rows, "snapshot", schema)
        with self.lock(table):  # not while a compaction or an erasure rewrites its files
            self.files.swap_tree(staging, final)
        return [final + f.removeprefix(staging) for f in files]

    def delete_rows(self, table: str, column: str, values: Iterable[Any], *, tenant_id: int | None = None) -> int:
        """Remove the rows whose `column` is in `values` (erasure, retention) and return how many went.

        Only files that can hold a match are read (Parquet min/max statistics); each affected file is
        rewritten aside and swapped in, or removed when nothing is left, so readers never see half a file.
        """
        wanted = set(values)
        if not wanted:
            return 0
        base = self.table_path(table)
        folder = f"{base}/tenant_id={tenant_id}" if tenant_id is not None else base
        removed = 0
        with self.lock(table):  # compacted files (`tenant_id=T/_compacted/`) are reached like batch files
            manifest = Manifest.load(self.files, base)
            for path in self.files.glob(f"{folder}/**/*.parquet"):
                if not _may_contain(self.files, path, column, wanted):
                    continue
                data = self.files.read_table(path)
                keep = pc.invert(pc.is_in(data[column], value_set=pa.array(sorted(wanted), type=data[column].type)))
                kept = data.filter(pc.fill_null(keep, True))
                if kept.num_rows == data.num_rows:
                    continue
                if not _rewrite_keeping_folded(self.files, base, manifest, path, kept):
                    removed += data.num_rows - kept.num_rows
            manifest.save_if_changed(self.files, base)
        return removed

    def delete_before(self, table: str, column: str, cutoff: datetime) -> int:
        """Remove the rows whose timestamp `column` is before `cutoff` (retention); returns how many went."""
        return self._filter_files(table, column, cutoff, delete=True)

    def count_before(self, table: str, column: str, cutoff: datetime) -> int:
        return self._filter_files(table, column, cutoff, delete=False)

    def _filter_files(self, table: str, column: str, cutoff: datetime, *, delete: bool) -> int:
        base = self.table_path(table)
        matched = 0
        with self.lock(table):
            manifest = Manifest.load(self.files, base)
            for path in self.files.glob(f"{base}/**/*.parquet"):
                if not _may_be_before(self.files, path, column, cutoff):
                    continue
                data = self.files.read_table(path)
                old = pc.fill_null(pc.less(data[column], pa.scalar(cutoff, type=data[column].type)), False)
                count = pc.sum(old).as_py() or 0
                if manifest.is_folded(self.files, base, path.removeprefix(base + "/")):
                    count_here = 0  # its rows are counted in the compacted file that holds them
                else:
                    count_here = count
                matched += count_here
                if not delete or count == 0:
                    continue
                _rewrite_keeping_folded(self.files, base, manifest, path, data.filter(pc.invert(old)))
            manifest.save_if_changed(self.files, base)
        return matched


def _rewrite_keeping_folded(files: LakeFiles, base: str, manifest: Manifest, path: str, kept: pa.Table) -> bool:
    """`_rewrite`; but a file already folded into a compacted file is deleted: every row it holds is in the
    compacted file (rewritten as well), and readers skip it. Rewritten, it got a new stamp that only the
    manifest saved at the end made "folded" again: a process killed in between left it looking new, and its
    rows were read twice (and folded twice by the next compaction). Returns whether it was folded (its rows
    are counted elsewhere)."""
    relative = path.removeprefix(base + "/")
    if manifest.is_folded(files, base, relative):
        files.delete(path)
        manifest.folded.pop(relative, None)
        manifest.changed = True
        return True
    _rewrite(files, path, kept)
    return False


def _rewrite(files: LakeFiles, path: str, kept: pa.Table) -> None:
    """Replace a file by the rows kept (readers see the old file or the new one), or remove it when none are."""
    if kept.num_rows == 0:
        files.delete(path)
        return
    files.write_table(kept, path)


def _may_be_before(files: LakeFiles, path: str, column: str, cutoff: datetime) -> bool:
    return any(low is None or (low if low.tzinfo else low.replace(tzinfo=cutoff.tzinfo)) < cutoff
               for low, _ in _row_group_ranges(files, path, column))


def _may_contain(files: LakeFiles, path: str, column: str, wanted: set[Any]) -> bool:
    """False only when the file's statistics prove no row has a wanted value (or it has no such column)."""
    low, high = min(wanted), max(wanted)
    return any(least is None or not (most < low or least > high)
               for least, most in _row_group_ranges(files, path, column))


def _row_group_ranges(files: LakeFiles, path: str, column: str) -> Iterable[tuple[Any, Any]]:
    """(min, max) of `column` per row group from the Parquet footer, (None, None) where unknown; nothing
    when the file has no such column."""
    metadata = files.read_metadata(path)
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    if column not in names:
        return
    index = names.index(column)
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        yield (stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None)
