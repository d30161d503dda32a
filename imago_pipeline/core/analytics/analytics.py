"""The analytics DuckDB connection shared by the model runner and `imago sql`.

An in-memory database with a view per lake table (deduplicated, see `sources.py`) and per built model.
It is sandboxed to the lake: DuckDB may read files only under the lake's root, a folder or an S3 prefix
registered as a filesystem (and write only there, which the model runner needs for `COPY … TO
<lake>/models/…`), may not install or load extensions, and
the configuration is locked so a query cannot lift that. `run_query` further accepts a single read
statement only, which is what `imago sql` runs.
"""

from __future__ import annotations

import duckdb

from imago_pipeline.core.analytics.project import is_model_name
from imago_pipeline.core.analytics.sources import quote_identifier, quote_literal, view_sql
from imago_pipeline.core.stores.lake import LakeRoot, files_of
from imago_pipeline.core.stores.lake_tables import LAKE_TABLES

_READ_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


class QueryRejected(ValueError):
    """A statement `imago sql` does not run: anything but one SELECT (or EXPLAIN)."""


def open_analytics(lake: LakeRoot) -> duckdb.DuckDBPyConnection:
    """A connection with every lake table and every built model registered as a view."""
    files = files_of(lake)
    con = duckdb.connect(":memory:")
    files.register(con)
    con.execute("SET parquet_metadata_cache = true")  # footers read once per connection, not once per scan
    # DuckDB's cache of file bytes keeps a copy of every file read (5.5 GB after four models at a million
    # images) that a build never reads again
    con.execute("SET enable_external_file_cache = false")
    for table in LAKE_TABLES.values():
        con.execute(f"CREATE VIEW {quote_identifier(table.name)} AS {view_sql(files, table)}")
    for name, path in built_models(files).items():
        register_model(con, name, files.uri(path))
    con.execute(f"SET allowed_directories = [{quote_literal(files.allowed_prefix())}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def built_models(lake: LakeRoot) -> dict[str, str]:
    """The models built so far, by name, each with its file relative to the lake's root (a model removed
    from the project stays until its folder goes)."""
    found = {}
    for path in files_of(lake).glob("models/*/*.parquet"):
        _, name, file_name = path.split("/")
        if file_name == f"{name}.parquet" and is_model_name(name) and name not in LAKE_TABLES:
            found[name] = path
    return found


def register_model(con: duckdb.DuckDBPyConnection, name: str, uri: str) -> None:
    con.execute(f"CREATE OR REPLACE VIEW {quote_identifier(name)} AS "
                f"SELECT * FROM read_parquet({quote_literal(uri)})")


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation:
    """Run one read statement; anything that would write, attach, configure or run twice is refused."""
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        raise QueryRejected(f"expected one statement, got {len(statements)}")
    if statements[0].type not in _READ_STATEMENTS:
        raise QueryRejected(f"only SELECT queries run here, not {statements[0].type.name}")
    return con.sql(sql)


def describe_views(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(view, kind, [(column, type)]) for every view: lake tables first, then models."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    views: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        views.setdefault(table, []).append((column, kind))
    lake = [(name, "lake", views.pop(name)) for name in LAKE_TABLES if name in views]
    return lake + [(name, "model", columns) for name, columns in sorted(views.items())]
