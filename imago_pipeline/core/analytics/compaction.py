"""Lake compaction: each per-image table rewritten into one file per tenant and month holding only the
newest row per image, so a query reads a hundred files instead of a hundred thousand and does not
deduplicate a million rows every time. Snapshot tables (the inference log and feedback, rewritten whole by
the monitoring asset, one file per tenant and day) are merged the same way, every row kept.

Layout, per table: the writers' batch files (`tenant_id=T/date=D/part-<batch>.parquet`, the *tail*) and
the compacted files (`tenant_id=T/_compacted/<YYYY-MM>-g<generation>.parquet`, each with a `date` column),
listed in `<table>/_manifest.json` with the tail files already folded into them. All rows of an image
sit in one tenant and day (the day it was uploaded), so tenant-months compact independently.

- **Incremental.** A run reads the manifest, takes the tail files not folded yet (or rewritten since:
  a re-run batch replaces its own file), and rewrites only the tenant-months they touch: the month's
  compacted file plus its new tail files, newest row per image (same order as the SQL views: the table's
  `newest_first` columns, then the file name; a compacted row loses a tie to a tail row).
- **Atomic for readers.** New files appear whole (written aside and renamed on a local lake; an S3
  object appears when its upload completes); the manifest is replaced in one step. Readers
  (`analytics/sources.py`) take the manifest's compacted files plus the tail files not folded, keeping a
  tail row over a compacted row of the same image. Folded tail files and replaced compacted files stay
  for a grace period (queries already running may still read them), then a later run deletes them.
- **Safe with writers and erasure.** A run holds the table's lock (`Lake.lock`) from reading to
  swapping; erasure and retention take the same lock to rewrite files (compacted files included: they are
  ordinary Parquet files under the table), so a compaction never brings back an erased row. Writers of new
  batch files need no lock: a file that appears during a run stays in the tail.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from imago_pipeline.core.analytics.sources import quote_identifier, quote_literal
from imago_pipeline.core.stores.lake import COMPACTED_DIR, Lake, Manifest
from imago_pipeline.core.stores.lake_files import LakeFiles
from imago_pipeline.core.stores.lake_tables import LAKE_TABLES, LakeTable

GRACE_SECONDS = 900.0  # a folded or replaced file stays this long for queries that already listed it


@dataclass(frozen=True)
class CompactionReport:
    table: str
    tail_files: int  # tail files folded by this run
    months: int  # tenant-months rewritten
    rows: int  # rows in the rewritten compacted files
    deleted_files: int  # folded and replaced files past their grace period, removed
    seconds: float


def tail_files(files: LakeFiles, table: str, manifest: Manifest) -> list[str]:
    """The batch files not folded into a compacted file (relative to the table's folder, sorted)."""
    found = [p.removeprefix(table + "/") for p in files.glob(f"{table}/*/*/part-*.parquet")]
    return [f for f in found if not manifest.is_folded(files, table, f)]


def compacted_files(files: LakeFiles, table: str, manifest: Manifest) -> list[str]:
    return sorted(p for p in manifest.compacted.values() if files.exists(f"{table}/{p}"))


def compact_table(lake: Lake, table: LakeTable, *, grace_seconds: float = GRACE_SECONDS,
                  connect: Callable | None = None) -> CompactionReport:
    """Fold the table's new batch files into its compacted files (see the module docstring)."""
    import duckdb

    started = time.perf_counter()
    files, name = lake.files, lake.table_path(table.name)
    if not files.has_files(name):
        return CompactionReport(table.name, 0, 0, 0, 0, time.perf_counter() - started)
    with lake.lock(table.name):
        manifest = Manifest.load(files, name)
        deleted = _collect_garbage(files, name, manifest, grace_seconds)
        tail = tail_files(files, name, manifest)
        by_month: dict[str, list[str]] = defaultdict(list)
        for relative in tail:
            tenant, day = (part.split("=", 1)[1] for part in relative.split("/")[:2])
            by_month[f"{tenant}/{day[:7]}"].append(relative)
        rows = 0
        if by_month:
            manifest.generation += 1
            con = (connect or duckdb.connect)(":memory:")
            try:
                con.execute("SET enable_external_file_cache = false")
                files.register(con)
                for key, month_files in sorted(by_month.items()):
                    rows += _compact_month(con, table, files, name, manifest, key, month_files)
            finally:
                con.close()
            now = time.time()
            for relative in tail:
                stamp = files.stamp(f"{name}/{relative}")
                if stamp is not None:
                    manifest.folded[relative] = stamp
                    manifest.retired.append((relative, now))
            manifest.save(files, name)  # the swap: readers now take the new compacted files, not these tail files
        elif deleted:
            manifest.save(files, name)
        return CompactionReport(table.name, len(tail), len(by_month), rows, deleted, time.perf_counter() - started)


def compact_lake(lake: Lake, tables: list[str] | None = None, **options) -> list[CompactionReport]:
    return [compact_table(lake, LAKE_TABLES[name], **options) for name in (tables or list(LAKE_TABLES))]


def _compact_month(con, table: LakeTable, files: LakeFiles, name: str, manifest: Manifest, key: str,
                   month_files: list[str]) -> int:
    tenant, month = key.split("/")
    columns = ["date", *table.schema.names]
    select = ", ".join(quote_identifier(c) for c in columns)
    tail_list = "[" + ", ".join(quote_literal(files.uri(f"{name}/{f}")) for f in month_files) + "]"
    sources = [f"SELECT {select}, filename FROM read_parquet({tail_list}, hive_partitioning = true, "
               "hive_types = {'tenant_id': BIGINT, 'date': DATE}, filename = true, union_by_name = true)"]
    previous = manifest.compacted.get(key)
    if previous and files.exists(f"{name}/{previous}"):
        sources.append(f"SELECT {select}, '' AS filename FROM "
                       f"read_parquet({quote_literal(files.uri(f'{name}/{previous}'))}, hive_partitioning = false)")
    relative = f"tenant_id={tenant}/{COMPACTED_DIR}/{month}-g{manifest.generation}.parquet"
    target = f"{name}/{relative}"
    staged = files.staging_name(target)
    if table.newest_first:  # a per-image table: the newest row per image
        order = ", ".join(f"{quote_identifier(c)} DESC NULLS LAST" for c in table.newest_first)
        rows = (f"SELECT {select} FROM ({' UNION ALL BY NAME '.join(sources)}) "
                f"QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY {order}, filename DESC) = 1 "
                "ORDER BY image_id")
    else:  # a snapshot table (rows with their own ids, rewritten whole by their writer): every row
        rows = f"SELECT {select} FROM ({' UNION ALL BY NAME '.join(sources)})"
    con.execute(f"COPY ({rows}) TO {quote_literal(files.uri(staged))} (FORMAT parquet, COMPRESSION zstd)")
    files.publish(staged, target)
    if previous and previous != relative:
        manifest.retired.append((previous, time.time()))
    manifest.compacted[key] = relative
    return int(con.execute(f"SELECT count(*) FROM read_parquet({quote_literal(files.uri(target))})").fetchone()[0])


def _collect_garbage(files: LakeFiles, name: str, manifest: Manifest, grace_seconds: float) -> int:
    """Delete folded tail files and replaced compacted files whose grace period is over. A tail file
    rewritten since it was folded is new work: it is kept (and leaves the folded set)."""
    now, kept, deleted = time.time(), [], 0
    for relative, since in manifest.retired:
        if now - since < grace_seconds:
            kept.append((relative, since))
            continue
        if relative in manifest.folded and not manifest.is_folded(files, name, relative):
            manifest.folded.pop(relative, None)  # rewritten by a re-run batch: back in the tail
            continue
        if relative in manifest.compacted.values():
            continue  # still current
        files.delete(f"{name}/{relative}")
        manifest.folded.pop(relative, None)
        deleted += 1
    manifest.retired = kept
    return deleted
