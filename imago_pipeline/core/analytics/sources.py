"""The lake tables as SQL sources: one DuckDB view per table, holding the newest row per image.

The per-image tables are append-only per batch, so an image processed twice has two rows in two files;
the view keeps the newest one (its timestamp, then the file name, so equal timestamps still resolve the
same way every time). `inference_log` and `feedback` are whole-table snapshots with unique ids and are
read as they are. A table never compacted is read as `*/*/part-*.parquet`: the writers' files written
aside (`.tmp-…`) never match, and DuckDB expands the pattern once per scan, so a query sees each file
whole or not at all. A compacted table is read as its compacted files plus the batch files not folded
into them yet (`compaction.py`), listed when the view is made. A table nobody has written yet is an empty
view with the writer's columns, so models still run.
"""

from __future__ import annotations

import pyarrow as pa

from imago_pipeline.core.stores.lake import Manifest
from imago_pipeline.core.stores.lake_files import LakeFiles
from imago_pipeline.core.stores.lake_tables import LakeTable

SOURCE_NAME = "lake"
PARTITION_COLUMNS = (("tenant_id", "BIGINT"), ("date", "DATE"))


def view_columns(table: LakeTable) -> list[tuple[str, str]]:
    """(name, DuckDB type) in view order: the partition columns, then the file's own columns."""
    return [*PARTITION_COLUMNS, *((f.name, duckdb_type(f.type)) for f in table.schema)]


def duckdb_type(arrow: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(arrow):
        return f"{duckdb_type(arrow.value_type)}[{arrow.list_size}]"
    if pa.types.is_list(arrow):
        return f"{duckdb_type(arrow.value_type)}[]"
    if pa.types.is_timestamp(arrow):
        return "TIMESTAMPTZ" if arrow.tz else "TIMESTAMP"
    for test, name in ((pa.types.is_int64, "BIGINT"), (pa.types.is_float64, "DOUBLE"), (pa.types.is_float32, "FLOAT"),
                       (pa.types.is_string, "VARCHAR"), (pa.types.is_boolean, "BOOLEAN")):
        if test(arrow):
            return name
    raise ValueError(f"no DuckDB type for lake column type {arrow}")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_sql(files: LakeFiles, table: LakeTable) -> str:
    """The SELECT behind a source view: deduplicated when the table is append-only, empty when absent.

    A compacted table (`compaction.py`) is read as its compacted files (one row per image
    already) plus its tail: the batch files not folded yet, deduplicated among themselves; an image in the
    tail takes its tail row. The file lists are taken now, so a view sees one generation of the table."""
    from imago_pipeline.core.analytics.compaction import compacted_files, tail_files  # it imports this module

    columns = view_columns(table)
    select = ", ".join(quote_identifier(name) for name, _ in columns)
    name = table.name
    manifest = Manifest.load(files, name)
    compacted = compacted_files(files, name, manifest)
    if not compacted and not files.any_match(f"{name}/*/*/part-*.parquet"):
        typed = ", ".join(f"CAST(NULL AS {kind}) AS {quote_identifier(name)}" for name, kind in columns)
        return f"SELECT {typed} WHERE false"
    hive = "hive_partitioning = true, hive_types = {'tenant_id': BIGINT, 'date': DATE}"
    if not compacted:
        scan = (f"read_parquet({quote_literal(files.uri(f'{name}/*/*/part-*.parquet'))}, {hive}"
                + (", filename = true)" if table.newest_first else ")"))
        if not table.newest_first:
            return f"SELECT {select} FROM {scan}"
        return f"SELECT {select} FROM {scan} QUALIFY {_newest(table)} = 1"
    tail = tail_files(files, name, manifest)
    compacted_scan = (f"read_parquet({_list(files, name, compacted)}, hive_partitioning = true, "
                      "hive_types = {'tenant_id': BIGINT}, union_by_name = true)")
    if not tail:
        return f"SELECT {select} FROM {compacted_scan}"
    tail_scan = f"read_parquet({_list(files, name, tail)}, {hive}, filename = true, union_by_name = true)"
    if not table.newest_first:
        return f"SELECT {select} FROM {compacted_scan} UNION ALL BY NAME SELECT {select} FROM {tail_scan}"
    return (f"WITH tail AS (SELECT {select} FROM {tail_scan} QUALIFY {_newest(table)} = 1) "
            f"SELECT {select} FROM {compacted_scan} AS c ANTI JOIN tail USING (image_id) "
            f"UNION ALL BY NAME SELECT {select} FROM tail")


def _newest(table: LakeTable) -> str:
    order = ", ".join(f"{quote_identifier(c)} DESC NULLS LAST" for c in table.newest_first)
    return f"row_number() OVER (PARTITION BY image_id ORDER BY {order}, filename DESC)"


def _list(files: LakeFiles, table: str, relative: list[str]) -> str:
    return "[" + ", ".join(quote_literal(files.uri(f"{table}/{f}")) for f in relative) + "]"
