"""The Parquet lake: one dataset per table under `<root>/<table>/`, hive-partitioned by tenant and date.

Each batch writes one file per (tenant, date) it touches, named after the run, so files are batch-sized
and a re-run of the same batch replaces its own files instead of duplicating rows. DuckDB reads the
folders as they are: `read_parquet('<root>/exif/**/*.parquet', hive_partitioning = true)`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


class Lake:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def table_path(self, table: str) -> Path:
        if not _SAFE_NAME.match(table):
            raise ValueError(f"bad lake table name {table!r}")
        return self.root / table

    def glob(self, table: str) -> str:
        return str(self.table_path(table) / "**" / "*.parquet")

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
        if final.exists():
            os.replace(final, old)
        if staging.exists():
            os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        return [final / f.relative_to(staging) for f in files]
