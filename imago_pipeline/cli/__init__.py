"""`imago`: the command line for operators and analysts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imago_pipeline.core.config import ImagoSettings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Imago image-enrichment platform.")
admin_app = typer.Typer(no_args_is_help=True, help="Tenants and API keys.")
app.add_typer(admin_app, name="admin")
console = Console(stderr=True)


@app.command()
def exif(file: Path, as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False) -> None:
    """Print the EXIF record of one image file (null for absent fields)."""
    from imago_pipeline.core.enrichment.decode import InvalidImage
    from imago_pipeline.core.enrichment.exif import extract_exif

    settings = ImagoSettings()
    try:
        data = file.read_bytes()
        if len(data) > settings.max_upload_bytes:
            raise InvalidImage(f"{len(data)} bytes is over the limit of {settings.max_upload_bytes} bytes")
        record = extract_exif(data, max_pixels=settings.max_pixels).to_dict()
    except (OSError, InvalidImage) as exc:
        typer.echo(f"imago exif: {file}: {exc}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False))
    else:
        table = Table(show_header=False)
        for key, value in record.items():
            table.add_row(key, "" if value is None else str(value))
        Console().print(table)


@app.command()
def ocr(
    file: Path,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object")] = False,
    languages: Annotated[Optional[str], typer.Option(help="Tesseract languages, e.g. eng+fra")] = None,
) -> None:
    """Print the text Tesseract reads in one image file."""
    from imago_pipeline.core.enrichment.decode import InvalidImage
    from imago_pipeline.core.enrichment.ocr import ocr_image

    settings = ImagoSettings()
    try:
        result = ocr_image(file.read_bytes(), languages=languages or settings.ocr_languages,
                           max_pixels=settings.max_pixels)
    except (OSError, InvalidImage) as exc:
        typer.echo(f"imago ocr: {file}: {exc}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"text": result.text, "confidence": result.confidence, "language": result.language,
                               "has_text": result.has_text}, ensure_ascii=False))
    else:
        typer.echo(result.text if result.has_text else "(no text found)")
        console.print(f"confidence {result.confidence}, language {result.language}, mode {result.mode}, "
                      f"rotation {result.rotation}")


@app.command()
def sql(
    query: Annotated[Optional[str], typer.Argument(help="One SELECT over the lake tables and the built models")] = None,
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

    if (tables and query) or not (tables or query or build) or (as_csv and as_json):
        typer.echo("imago sql: give a query, --tables or --build, and at most one of --csv and --json", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    if build:
        _build_sql_models(settings)
        if not (tables or query):
            return
    out = Console(width=max(Console().width, 170))  # a readable table also when piped
    con = open_analytics(settings.lake_root)
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
            raise typer.Exit(1)
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


def _build_sql_models(settings: ImagoSettings) -> None:
    """Materialize the models with their checks, recorded in the Dagster instance like the daemon's runs
    (which do the same whenever a lake table changes under `imago serve`)."""
    import dagster as dg

    from imago_pipeline.defs.resources import LakeResource
    from imago_pipeline.defs.analytics.assets import build_sql_model_assets
    from imago_pipeline.defs.in_process import QUIET_CONSOLE, get_instance

    started = time.perf_counter()
    result = dg.materialize(build_sql_model_assets(settings), instance=get_instance(settings),
                            resources={"lake": LakeResource(root=str(settings.lake_root))},
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


@dataclass
class IngestReport:
    registered: list = field(default_factory=list)  # (path, image)
    duplicates: int = 0
    rejected: list = field(default_factory=list)  # (path, reason)
    skipped: list = field(default_factory=list)  # not images at all


def _check_file(job: tuple[Path, ImagoSettings]) -> tuple[Path, object]:
    """Worker: read and validate one file; returns the CheckedUpload, None (not an image) or the reason."""
    from imago_pipeline.core.enrichment.decode import InvalidImage, sniff_media_type
    from imago_pipeline.core.ingest import check_upload

    path, settings = job
    try:
        with path.open("rb") as handle:
            if sniff_media_type(handle.read(16)) is None:
                return path, None
        return path, check_upload(path.read_bytes(), settings)
    except InvalidImage as exc:
        return path, str(exc)
    except OSError as exc:
        return path, f"unreadable: {exc.strerror}"


def _register_folder(folder: Path, tenant_name: str, settings: ImagoSettings, progress: Progress,
                     owner: str) -> tuple:
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.parallel import map_in_processes
    from imago_pipeline.core.ingest import CheckedUpload, store_uploads
    from imago_pipeline.core.stores.blobs import build_blob_store

    catalog = Catalog.connect(settings.catalog_url)
    store = build_blob_store(settings)
    tenant = catalog.get_or_create_tenant(tenant_name)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    report = IngestReport()
    task = progress.add_task("registering", total=len(files))
    pending: list[tuple[Path, CheckedUpload]] = []

    def flush() -> None:
        registrations = store_uploads(catalog, store, [(c, p.name, p.read_bytes()) for p, c in pending],
                                      tenant_id=tenant.id, status="queued", claim=owner)
        for (path, _), registration in zip(pending, registrations):
            report.registered.append((path, registration.image))
            report.duplicates += not registration.created
        pending.clear()

    # validation decodes every image: spread it over the cores; catalog writes stay here, in batches
    checks = map_in_processes(_check_file, [(p, settings) for p in files], settings.workers,
                              on_crash=lambda job: (job[0], "the decoder crashed on this file"))
    for path, checked in checks:
        progress.advance(task)
        if checked is None:
            report.skipped.append(path)
        elif isinstance(checked, CheckedUpload):
            pending.append((path, checked))
            if len(pending) >= 200:
                flush()
        else:
            report.rejected.append((path, checked))
    flush()
    return catalog, tenant, report


@app.command()
def ingest(
    folder: Path,
    tenant: Annotated[Optional[str], typer.Option(help="Tenant name (default: IMAGO_DEFAULT_TENANT)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per Dagster run")] = None,
    details: Annotated[bool, typer.Option(help="Print a row per image")] = False,
) -> None:
    """Register every image under FOLDER and process it through the Dagster assets, in this process."""
    from imago_pipeline.core.claims import process_claim
    from imago_pipeline.core.parallel import worker_pool
    from imago_pipeline.defs.in_process import get_instance, process_images

    if not folder.is_dir():
        typer.echo(f"imago ingest: {folder} is not a folder", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    started = time.perf_counter()
    columns = (TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    owner = process_claim()  # if this process dies, the stranded-images sensor requeues what it held
    with Progress(*columns, console=console, transient=False) as progress, worker_pool(settings.workers):
        catalog, tenant_row, report = _register_folder(folder, tenant or settings.default_tenant, settings, progress,
                                                       owner)
        todo = sorted({image.id for _, image in report.registered if image.status != "done"})
        task = progress.add_task("processing", total=len(todo))
        instance = get_instance(settings)
        runs = process_images(todo, settings=settings, instance=instance, batch_size=batch_size, owner=owner,
                              on_batch=lambda run: progress.advance(task, len(run.keys)))
    elapsed = time.perf_counter() - started
    images = catalog.images_by_id(image.id for _, image in report.registered)
    _print_summary(catalog, tenant_row, report, images, runs, len(todo), elapsed, details)
    if any(not run.success for run in runs):
        raise typer.Exit(1)


def _camera(make: str | None, model: str | None) -> str:
    """'Canon' + 'Canon EOS 40D' reads as 'Canon EOS 40D'."""
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(x for x in (make, model) if x)


def _print_summary(catalog, tenant, report: IngestReport, images: dict, runs, processed: int, elapsed: float,
                   details: bool) -> None:
    out = Console(width=max(Console().width, 170))  # a readable table also when piped
    scoped = catalog.for_tenant(tenant.id)
    if details:
        table = Table(title=f"Images of tenant '{tenant.name}'", title_justify="left")
        for column in ("id", "file", "status", "type", "size", "camera", "taken", "exposure", "GPS", "thumbnail"):
            table.add_column(column, overflow="fold")
        for path, registered in report.registered:
            image = images[registered.id]
            record = scoped.get_exif(image.id)
            thumb = scoped.get_thumbnail(image.id)
            camera = _camera(record.make, record.model) if record else ""
            exposure = ""
            if record and record.exposure_time:
                exposure = f"1/{round(1 / record.exposure_time)}s" if record.exposure_time < 1 else f"{record.exposure_time:g}s"
                exposure += f" f/{record.f_number:g}" if record.f_number else ""
                exposure += f" ISO{record.iso}" if record.iso else ""
            gps = (f"{record.gps_latitude:.4f},{record.gps_longitude:.4f}"
                   if record and record.gps_latitude is not None and record.gps_longitude is not None else "")
            status = image.status if image.status != "failed" else f"failed ({image.error})"
            table.add_row(str(image.id), path.name, status, image.media_type.removeprefix("image/"),
                          f"{image.width}x{image.height}", camera, (record.datetime_original or "") if record else "",
                          exposure, gps, f"{thumb.width}x{thumb.height}" if thumb else "")
        out.print(table)
        content = Table(title="What was read and seen", title_justify="left")
        for column in ("id", "file", "OCR (language, confidence)", "text", "tags"):
            content.add_column(column, overflow="fold")
        for path, registered in report.registered:
            ocr, vision = scoped.get_ocr(registered.id), scoped.get_vision(registered.id)
            reading = ""
            excerpt = ""
            if ocr is not None:
                reading = (f"{ocr.language or '?'}, {ocr.confidence:.0f}%" if ocr.has_text and ocr.confidence
                           else "no text")
                excerpt = " ".join(ocr.text.split())[:70] + ("…" if len(ocr.text) > 70 else "")
            content.add_row(str(registered.id), path.name, reading, excerpt,
                            ", ".join(vision.tags) if vision else "")
        out.print(content)
        for path, reason in report.rejected:
            out.print(f"[yellow]rejected[/] {path.name}: {reason}")
    statuses: dict[str, int] = {}
    for image in images.values():
        statuses[image.status] = statuses.get(image.status, 0) + 1
    rate = f" ({processed / elapsed * 3600:,.0f} images/hour)" if processed and elapsed else ""
    out.print(
        f"[bold]{len(report.registered)}[/] images registered ({report.duplicates} already known), "
        f"{len(report.rejected)} rejected, {len(report.skipped)} non-image files skipped; {processed} processed "
        f"in {len(runs)} Dagster runs: {statuses.get('done', 0)} done, {statuses.get('failed', 0)} failed; "
        f"{elapsed:.1f} s{rate}.",
        soft_wrap=True,
    )


@app.command()
def demo(folder: Annotated[Path, typer.Argument()] = Path("samples")) -> None:
    """Ingest the sample images on the embedded default and print what was extracted."""
    ingest(folder, tenant="demo", batch_size=None, details=True)


@app.command()
def serve(
    host: str = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="API port")] = 8000,
    dagster_port: Annotated[int, typer.Option(help="Dagster UI port")] = 3000,
) -> None:
    """Run the Dagster UI (webserver + daemon) and the API until Ctrl-C."""
    from imago_pipeline.cli.serve import serve as run

    raise typer.Exit(run(host, api_port, dagster_port))


@admin_app.command("create-client")
def create_client(
    name: str,
    scopes: Annotated[str, typer.Option(help="Comma-separated: images:read, images:write, images:delete, "
                                             "ai:use, admin")] = "images:read,images:write,ai:use",
    plan: Annotated[str, typer.Option(help="Plan name (rate limit and default quota)")] = "free",
    quota_bytes: Annotated[Optional[int], typer.Option(help="Storage quota override, in bytes")] = None,
) -> None:
    """Create a client and print its first API key, once (only a hash is stored)."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.catalog.repository import ClientExists

    settings = ImagoSettings()
    if plan not in settings.plans:
        console.print(f"unknown plan {plan!r}; plans: {', '.join(sorted(settings.plans))}")
        raise typer.Exit(2)
    catalog = Catalog.connect(settings.catalog_url)
    try:
        tenant = catalog.create_client(name, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                                       plan=plan, quota_bytes=quota_bytes)
    except ClientExists:
        console.print(f"a client named {name!r} exists; rotate its key with POST /auth/clients/{{id}}/rotate-key")
        raise typer.Exit(1)
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(2)
    key = catalog.issue_api_key(tenant.id)
    console.print(f"client '{name}' (id {tenant.id}, plan {plan}, scopes {', '.join(tenant.scopes)})")
    console.print("this key is shown once, store it now:")
    typer.echo(key)


def _batch_filters(settings: ImagoSettings, *, stale: bool, failed: bool, tenant: str | None, since, until,
                   stages: list[str], budget: int | None) -> dict:
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.reprocessing import ReprocessFilters

    try:
        filters = ReprocessFilters.resolve(Catalog.connect(settings.catalog_url), tenant=tenant, created_from=since,
                                           created_to=until, stages=stages)
    except ValueError as exc:
        typer.echo(f"imago reprocess: {exc}", err=True)
        raise typer.Exit(2)
    return {"filters": filters, "budget": settings.reprocess_budget if budget is None else budget,
            "include_stale": stale, "include_failed": failed}


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go")] = False,
) -> None:
    """Purge inference logs and feedback past their retention, everywhere (the daily `retention_job`)."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.retention import purge_expired
    from imago_pipeline.core.stores.lake import Lake

    settings = ImagoSettings()
    days = {"inference_log": settings.inference_log_retention_days, "feedback": settings.feedback_retention_days}
    out = Console(soft_wrap=True)
    if dry_run:
        results = purge_expired(Catalog.connect(settings.catalog_url), Lake(settings.lake_root), days, dry_run=True)
        for r in results:
            out.print(f"{r.table}: {r.catalog_rows} catalog rows and {r.lake_rows} lake rows older than "
                      f"{r.retention_days} days (before {r.cutoff:%Y-%m-%d %H:%M} UTC) would be purged")
        return
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.defs.in_process import QUIET_CONSOLE, get_instance

    instance = get_instance(settings)
    job = build_definitions(settings).resolve_job_def("retention_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE)
    if not result.success:
        out.print(f"the retention run {result.run_id} failed; see it in the Dagster UI")
        raise typer.Exit(1)
    metadata = result.asset_materializations_for_node("retention_purge")[0].metadata
    for table in ("inference_log", "feedback"):
        out.print(f"{table}: purged {metadata[f'{table}_catalog_rows_purged'].value} catalog rows and "
                  f"{metadata[f'{table}_lake_rows_purged'].value} lake rows; what is built from them was rebuilt")


def main() -> None:  # pragma: no cover
    sys.exit(app())


@app.command()
def reprocess(
    stale: Annotated[bool, typer.Option("--stale", help="Redo stages whose code or model version changed")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Retry failed images (bounded retries, then a dead "
                                                           "letter)")] = False,
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's images")] = None,
    since: Annotated[Optional[datetime], typer.Option(help="Only images uploaded at or after (ISO date)")] = None,
    until: Annotated[Optional[datetime], typer.Option(help="Only images uploaded before (ISO date)")] = None,
    stage: Annotated[Optional[list[str]], typer.Option(help="Only this stage and what depends on it "
                                                            "(repeatable)")] = None,
    budget: Annotated[Optional[int], typer.Option(help="At most this many images, oldest first")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be redone")] = False,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per Dagster run")] = None,
) -> None:
    """Re-materialize stale stages or failed images, in batches, in this process.

    `--stale` alone redoes every stale stage. With `--failed`, a filter or a budget, the nightly batch's
    planner chooses (the same as the `batch_reprocess_job` in the Dagster UI).
    """
    from imago_pipeline.defs.in_process import get_instance, reprocess_stale

    if not stale and not failed:
        typer.echo("imago reprocess: say what to redo (--stale, --failed or both)", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    plan_filters = None
    if failed or tenant or since or until or stage or budget is not None:
        plan_filters = _batch_filters(settings, stale=stale, failed=failed, tenant=tenant, since=since, until=until,
                                      stages=stage or [], budget=budget)
    instance = get_instance(settings)
    groups, _ = reprocess_stale(settings=settings, instance=instance, dry_run=True, plan_filters=plan_filters)
    out = Console()
    if not groups:
        out.print("nothing to redo")
        return
    for group in groups:
        out.print(f"{len(group.image_ids)} images: {', '.join(group.stages)}")
    if dry_run:
        return
    total = sum(len(g.image_ids) for g in groups)
    with Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("reprocessing", total=total)
        _, runs = reprocess_stale(settings=settings, instance=instance, batch_size=batch_size,
                                  on_batch=lambda run: bar.advance(task, len(run.keys)), plan_filters=plan_filters)
    failed = [r for r in runs if not r.success]
    out.print(f"{total} images reprocessed in {len(runs)} Dagster runs; {len(failed)} runs failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def classify(path: Path, as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Cat or dog for an image file, or every image under a folder (one JSON object per line)."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.enrichment.decode import InvalidImage, inspect_image, sniff_media_type
    from imago_pipeline.core.stores.blobs import build_blob_store
    from training.registry import ModelRegistry, load_classifier

    settings = ImagoSettings()
    if not path.exists():
        typer.echo(f"imago classify: {path} does not exist", err=True)
        raise typer.Exit(2)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and sniff_media_type(p.open("rb").read(16)))
    registry = ModelRegistry(Catalog.connect(settings.catalog_url), build_blob_store(settings),
                             settings.resolved_home / "models")
    model = registry.production()
    classifier = load_classifier(registry, model)
    failed = 0
    for start in range(0, len(files), 64):
        chunk, datas = [], []
        for file in files[start:start + 64]:
            try:
                data = file.read_bytes()
                inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
                chunk.append(file)
                datas.append(data)
            except (OSError, InvalidImage) as exc:
                failed += 1
                typer.echo(f"imago classify: {file}: {exc}", err=True)
        for file, prediction in zip(chunk, classifier.predict(datas)):
            record = {"path": str(file), "label": prediction.label, "probability": round(prediction.probability, 4),
                      "model_version": model.version}
            typer.echo(json.dumps(record) if as_json else
                       f"{file}\t{prediction.label}\t{prediction.probability:.3f}\t{model.version}")
    if failed and path.is_file():
        raise typer.Exit(1)
