"""Materializing a model and running its data tests.

A model is written with DuckDB's `COPY (<compiled SQL>) TO` into a file beside its final place, then
published (renamed; on S3 copied server-side): a reader sees the previous build or the new one, never half
of one, and a refused build leaves the previous one in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb

from imago_pipeline.core.analytics.analytics import open_analytics, register_model
from imago_pipeline.core.analytics.project import DataTest, ModelError, SqlProject, model_file
from imago_pipeline.core.analytics.sources import quote_literal
from imago_pipeline.core.stores.lake import LakeRoot, files_of

# Columns that name a single image: a model holding them would keep an erased image after erasure.
IDENTIFYING_COLUMNS = frozenset({"image_id", "sha256"})


@dataclass(frozen=True)
class BuiltModel:
    name: str
    path: str  # where DuckDB reads it (a local path or the lake's S3 name)
    rows: int
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    seconds: float


@dataclass(frozen=True)
class DataTestOutcome:
    test: DataTest
    failing_rows: int
    error: str | None = None  # the test could not run (e.g. the column is not in the model)

    @property
    def passed(self) -> bool:
        return self.error is None and self.failing_rows == 0


def build_model(con: duckdb.DuckDBPyConnection, project: SqlProject, name: str, lake: LakeRoot) -> BuiltModel:
    """Write the model's Parquet file and (re)register its view on `con` (from `open_analytics`)."""
    files = files_of(lake)
    model = project.models[name]
    for ref in model.refs:
        if not files.exists(model_file(ref)):
            raise ModelError(f"{model.path}: ref('{ref}') has not been built yet; build it first")
    started = time.perf_counter()
    target = model_file(name)
    aside = files.staging_name(target)
    try:
        copied = con.execute(f"COPY ({project.compile(name, files)}) TO {quote_literal(files.uri(aside))} "
                             "(FORMAT parquet, COMPRESSION zstd)").fetchone()
        rows = copied[0] if copied else 0
        columns = [(row[0], row[1]) for row in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({quote_literal(files.uri(aside))})").fetchall()]
        identifying = sorted(IDENTIFYING_COLUMNS & {column for column, _ in columns})
        if identifying:
            raise ModelError(f"{model.path}: outputs {', '.join(identifying)}; models hold aggregates only "
                             "(an erased image must not survive in a model)")
        files.publish(aside, target)
    except BaseException:
        files.delete(aside)
        raise
    register_model(con, name, files.uri(target))
    return BuiltModel(name, files.uri(target), int(rows), columns, time.perf_counter() - started)


def run_tests(con: duckdb.DuckDBPyConnection, project: SqlProject, name: str, lake: LakeRoot) -> list[DataTestOutcome]:
    relation = f"read_parquet({quote_literal(files_of(lake).uri(model_file(name)))})"
    outcomes = []
    for test in project.models[name].tests:
        try:
            counted = con.execute(test.failing_rows_sql(relation)).fetchone()
            failing = counted[0] if counted else 0
            outcomes.append(DataTestOutcome(test, int(failing)))
        except duckdb.Error as exc:
            outcomes.append(DataTestOutcome(test, 0, str(exc).splitlines()[0]))
    return outcomes


def build_all(project: SqlProject, lake: LakeRoot) -> list[tuple[BuiltModel, list[DataTestOutcome]]]:
    """Every model in dependency order, each followed by its tests (the CLI-less path: bench, tests)."""
    files = files_of(lake)
    con = open_analytics(files)
    try:
        return [(build_model(con, project, name, files), run_tests(con, project, name, files))
                for name in project.models]
    finally:
        con.close()
