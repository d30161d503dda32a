"""`imago sql`: the Parquet lake and the SQL models, queried with DuckDB (Dagster only for `--build`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imago_pipeline.cli.app import app, console
from imago_pipeline.core.config import ImagoSettings


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="One SELECT over the lake tables and the built models")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row (JSON lines)")] = False,
    tables: Annotated[bool, typer.Option("--tables", help="List the tables and models with their columns")] = False,
    build: Annotated[bool, typer.Option("--build", help="First (re)build every SQL model and run its data tests, "
                                                        "in this process, as a Dagster run")] = False,
) -> None:
    """Query the Parquet lake with DuckDB: every lake table (newest row per image) and every built SQL model
    is a view. Read-only; safe while the pipeline writes."""
    import duckdb

    from imago_pipeline.core.analytics import QueryRejected, describe_views, open_analytics, run_query
    from imago_pipeline.core.stores.lake_files import lake_files_for

    if (tables and query) or not (tables or query or build) or (as_csv and as_json):
        typer.echo("imago sql: give a query, --tables or --build, and at most one of --csv and --json", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    if build:
        _build_sql_models(settings)
        if not (tables or query):
            return
    out = Console(width=max(Console().width, 170))  # a readable table also when piped
    con = open_analytics(lake_files_for(settings))
    try:
        if tables:
            listing = Table(title="Views: lake tables (newest row per image) and built SQL models",
                            title_justify="left")
            for column in ("view", "kind", "columns"):
                listing.add_column(column, overflow="fold")
            for name, kind, columns in describe_views(con):
                listing.add_row(name, kind, ", ".join(f"{c} {t.lower()}" for c, t in columns))
            out.print(listing)
            return
        try:
            relation = run_query(con, query)
            names, rows = relation.columns, relation.fetchall()
        except (duckdb.Error, QueryRejected) as exc:
            typer.echo(f"imago sql: {str(exc).splitlines()[0]}", err=True)
            raise typer.Exit(1) from None
    finally:
        con.close()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(zip(names, row)), default=_json_value, ensure_ascii=False))
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_csv_value(v) for v in row] for row in rows)
    else:
        result = Table()
        for index, name in enumerate(names):
            numeric = bool(rows) and all(isinstance(row[index], (int, float)) or row[index] is None for row in rows)
            result.add_column(name, justify="right" if numeric else "left", overflow="fold")
        for row in rows:
            result.add_row(*("" if v is None else str(v) for v in row))
        out.print(result)
        console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")

@app.command()
def compact(
    grace: Annotated[float, typer.Option(help="Seconds a folded file stays for queries already reading it")] = 900,
) -> None:
    """Compact the lake now (what the `lake_compaction` asset does every 30 minutes): each per-image table's
    new batch files folded into one file per tenant and month, newest row per image."""
    from imago_pipeline.core.analytics.compaction import compact_lake
    from imago_pipeline.core.stores.lake import Lake
    from imago_pipeline.core.stores.lake_files import lake_files_for

    for report in compact_lake(Lake(lake_files_for(ImagoSettings())), grace_seconds=grace):
        console.print(f"{report.table:15s} {report.tail_files:7,} files folded into {report.months:4,} tenant-months "
                      f"({report.rows:,} rows), {report.deleted_files:,} old files deleted, {report.seconds:.1f} s")


def _build_sql_models(settings: ImagoSettings) -> None:
    """Materialize the models with their checks, recorded in the Dagster instance like the daemon's runs
    (which do the same whenever a lake table changes under `imago serve`)."""
    import dagster as dg

    from imago_pipeline.defs.analytics.assets import build_sql_model_assets
    from imago_pipeline.defs.resources import LakeResource, SettingsResource
    from imago_pipeline.in_process import QUIET_CONSOLE, get_instance

    started = time.perf_counter()
    result = dg.materialize(build_sql_model_assets(settings), instance=get_instance(settings),
                            resources={"lake": LakeResource(root=settings.lake_location,
                                                                  settings=SettingsResource.of(settings))},
                            run_config=QUIET_CONSOLE, raise_on_error=False)
    built = result.get_asset_materialization_events()
    failed = sorted(e.check_name for e in result.get_asset_check_evaluations() if not e.passed)
    console.print(f"{len(built)} SQL models built in {time.perf_counter() - started:.1f} s"
                  + (f"; failed data tests: {', '.join(failed)}" if failed else "; every data test passed"))
    if not result.success:
        console.print(f"the run failed (Dagster run {result.run_id}); see it in the Dagster UI")
        raise typer.Exit(1)

def _csv_value(value: object) -> object:
    """Empty for NULL, JSON for lists and structs, ISO 8601 for dates and times."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_value, ensure_ascii=False)
    return value if isinstance(value, (str, int, float)) else _json_value(value)

def _json_value(value: object) -> object:
    """Dates, times and decimals as JSON can carry them: ISO 8601 text and numbers."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
