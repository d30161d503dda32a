"""`imago ingest` and `imago demo`: register a folder and process it through the Dagster assets, in this process."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imago_pipeline.cli.app import app, console
from imago_pipeline.core.claims import BULK_NICENESS
from imago_pipeline.core.config import ImagoSettings


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
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return path, "empty file"
            if size > settings.max_upload_bytes:  # refused before it is read (it may be larger than memory)
                return path, f"{size} bytes is over the limit of {settings.max_upload_bytes} bytes"
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
    from imago_pipeline.core.ingest import CheckedUpload, store_uploads
    from imago_pipeline.core.parallel import map_in_processes
    from imago_pipeline.core.stores.blobs import build_blob_store

    catalog = Catalog.connect(settings.catalog_url)
    store = build_blob_store(settings)
    tenant = catalog.clients.get_or_create(tenant_name)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    report = IngestReport()
    task = progress.add_task("registering", total=len(files))
    pending: list[tuple[Path, CheckedUpload]] = []

    def flush() -> None:
        # The bytes are read again here (the check ran in a worker): stored only when they are still the
        # bytes that were checked; a file changed or removed since is rejected, not stored unchecked.
        still: list[tuple[Path, CheckedUpload, bytes]] = []
        for path, checked in pending:
            try:
                data = path.read_bytes()
            except OSError as exc:
                report.rejected.append((path, f"unreadable: {exc.strerror}"))
                continue
            if hashlib.sha256(data).hexdigest() != checked.sha256:
                report.rejected.append((path, "changed while it was being ingested; run again to take it"))
                continue
            still.append((path, checked, data))
        registrations = store_uploads(catalog, store, [(c, p.name, data) for p, c, data in still],
                                      tenant_id=tenant.id, status="queued", claim=owner) if still else []
        for (path, _, _), registration in zip(still, registrations):
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
    tenant: Annotated[str | None, typer.Option(help="Tenant name (default: IMAGO_DEFAULT_TENANT)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per Dagster run")] = None,
    details: Annotated[bool, typer.Option(help="Print a row per image")] = False,
    nice: Annotated[int, typer.Option(help="Niceness of this bulk work (0: as fast as interactive uploads)",
                                      min=0, max=19)] = BULK_NICENESS,
) -> None:
    """Register every image under FOLDER and process it through the Dagster assets, in this process.

    This is bulk work: it runs niced (and its workers with it), so uploads through the API, processed on
    the same host, get the cores first."""
    from imago_pipeline.core.claims import process_claim
    from imago_pipeline.core.parallel import worker_pool
    from imago_pipeline.in_process import get_instance, process_images

    if not folder.is_dir():
        typer.echo(f"imago ingest: {folder} is not a folder", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    if nice:
        os.nice(nice)
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
    images = catalog.work.images_by_id(image.id for _, image in report.registered)
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
                exposure = (f"1/{round(1 / record.exposure_time)}s" if record.exposure_time < 1
                            else f"{record.exposure_time:g}s")
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
        for column in ("id", "file", "what it is", "OCR (language, confidence)", "text", "tags"):
            content.add_column(column, overflow="fold")
        for path, registered in report.registered:
            ocr, vision = scoped.get_ocr(registered.id), scoped.get_vision(registered.id)
            label = scoped.get_classification(registered.id)
            what = (f"{'no cat or dog' if label.label == 'other' else label.label} {label.probability:.0%}"
                    if label else "")
            reading = ""
            excerpt = ""
            if ocr is not None:
                reading = (f"{ocr.language or '?'}, {ocr.confidence:.0f}%" if ocr.has_text and ocr.confidence
                           else "no text")
                excerpt = " ".join(ocr.text.split())[:70] + ("…" if len(ocr.text) > 70 else "")
            content.add_row(str(registered.id), path.name, what, reading, excerpt,
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
