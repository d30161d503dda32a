"""`imago purge` and `imago reprocess`: the retention purge and the batch reprocessing, by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from imago_pipeline.cli.app import app, console
from imago_pipeline.core.config import ImagoSettings


def _batch_filters(settings: ImagoSettings, *, stale: bool, failed: bool, tenant: str | None, since, until,
                   stages: list[str], budget: int | None) -> dict:
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.reprocessing import ReprocessFilters

    try:
        filters = ReprocessFilters.resolve(Catalog.connect(settings.catalog_url), tenant=tenant, created_from=since,
                                           created_to=until, stages=stages)
    except ValueError as exc:
        typer.echo(f"imago reprocess: {exc}", err=True)
        raise typer.Exit(2) from None
    return {"filters": filters, "budget": settings.reprocess_budget if budget is None else budget,
            "include_stale": stale, "include_failed": failed}

@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go")] = False,
    force_sweep: Annotated[bool, typer.Option("--force-sweep", help="Delete the orphan files even when they "
                                              "are more than 5% of the files (after checking the catalog "
                                              "is the store's)")] = False,
) -> None:
    """Purge inference logs and feedback past their retention, everywhere, and delete stored files no row
    points at (the daily `retention_job`)."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.catalog.models import utcnow
    from imago_pipeline.core.orphan_blobs import sweep_orphan_blobs
    from imago_pipeline.core.retention import purge_expired
    from imago_pipeline.core.stores.blobs import build_blob_store
    from imago_pipeline.core.stores.lake import Lake
    from imago_pipeline.core.stores.lake_files import lake_files_for

    settings = ImagoSettings()
    out = Console(soft_wrap=True)
    if dry_run:
        catalog = Catalog.connect(settings.catalog_url)
        results = purge_expired(catalog, Lake(lake_files_for(settings)), settings.retention_days,
                                dry_run=True)
        for r in results:
            out.print(f"{r.table}: {r.catalog_rows} catalog rows and {r.lake_rows} lake rows older than "
                      f"{r.retention_days} days (before {r.cutoff:%Y-%m-%d %H:%M} UTC) would be purged")
        sweep = sweep_orphan_blobs(catalog, build_blob_store(settings), dry_run=True, force=force_sweep)
        out.print(f"stored files: {sweep.orphans} of {sweep.scanned} ({sweep.orphan_bytes} bytes) are a day old and "
                  f"no row points at them: " + (f"nothing would be deleted, {sweep.refused}" if sweep.refused
                                                else "they would be deleted"))
        cut_short = catalog.pending_erasures.requested_before(utcnow() - timedelta(minutes=10))
        out.print(f"erasures cut short: {len(cut_short)} would be finished")
        return
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.in_process import QUIET_CONSOLE, get_instance

    instance = get_instance(settings)
    job = build_definitions(settings).resolve_job_def("retention_job")
    sweep_config = {"ops": {"orphan_blob_sweep": {"config": {"force": force_sweep}}}}
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={**QUIET_CONSOLE,
                                                                                        **sweep_config})
    if not result.success:
        refused = result.failure_data_for_node("orphan_blob_sweep")
        if refused is not None and refused.user_failure_data is not None:
            out.print(f"stored files: nothing deleted: {refused.user_failure_data.description}")
        out.print(f"the retention run {result.run_id} failed; see it in the Dagster UI")
        raise typer.Exit(1)
    metadata = result.asset_materializations_for_node("retention_purge")[0].metadata
    for table in ("inference_log", "feedback"):
        out.print(f"{table}: purged {metadata[f'{table}_catalog_rows_purged'].value} catalog rows and "
                  f"{metadata[f'{table}_lake_rows_purged'].value} lake rows; what is built from them was rebuilt")
    swept = result.asset_materializations_for_node("orphan_blob_sweep")[0].metadata
    out.print(f"stored files: deleted {swept['orphans_deleted'].value} of {swept['files_scanned'].value} "
              f"({swept['orphan_bytes'].value} bytes) that no row pointed at")
    finished = result.asset_materializations_for_node("unfinished_erasures")[0].metadata
    out.print(f"erasures cut short: finished {finished['erasures_finished'].value}; Dagster partitions of erased "
              f"images erased: {finished['partitions_erased'].value}")

@app.command()
def reprocess(
    stale: Annotated[bool, typer.Option("--stale", help="Redo stages whose code or model version changed")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Retry failed images (bounded retries, then a dead "
                                                           "letter)")] = False,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's images")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only images uploaded at or after (ISO date)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only images uploaded before (ISO date)")] = None,
    stage: Annotated[list[str] | None, typer.Option(help="Only this stage and what depends on it "
                                                            "(repeatable)")] = None,
    budget: Annotated[int | None, typer.Option(help="At most this many images, oldest first")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be redone")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per Dagster run")] = None,
) -> None:
    """Re-materialize stale stages or failed images, in batches, in this process.

    `--stale` alone redoes every stale stage. With `--failed`, a filter or a budget, the nightly batch's
    planner chooses (the same as the `batch_reprocess_job` in the Dagster UI).
    """
    from imago_pipeline.in_process import get_instance, reprocess_stale

    if not stale and not failed:
        typer.echo("imago reprocess: say what to redo (--stale, --failed or both)", err=True)
        raise typer.Exit(2)
    settings = ImagoSettings()
    plan_filters = None
    if failed or tenant or since or until or stage or budget is not None:
        plan_filters = _batch_filters(settings, stale=stale, failed=failed, tenant=tenant, since=since, until=until,
                                      stages=stage or [], budget=budget)
    instance = get_instance(settings)
    plans: list = []
    groups, _ = reprocess_stale(settings=settings, instance=instance, dry_run=True, plan_filters=plan_filters,
                                on_plan=plans.append)
    dead = plans[-1].dead_lettered if plans else []
    out = Console()
    for group in groups:
        out.print(f"{len(group.image_ids)} images: {', '.join(group.stages)}")
    if dead:  # the planner dead-letters them when it runs (not on a dry run)
        out.print(f"{len(dead)} failed images {'would be' if dry_run else 'are'} dead-lettered, their "
                  f"{settings.reprocess_max_retries} retries spent: {', '.join(map(str, dead[:20]))}"
                  f"{' …' if len(dead) > 20 else ''} (POST /images/{{id}}/reprocess retries one anyway)")
    if not groups and not dead:
        out.print("nothing to redo")
        return
    if dry_run:
        return
    total = sum(len(g.image_ids) for g in groups)
    with Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("reprocessing", total=total)
        _, runs = reprocess_stale(settings=settings, instance=instance, batch_size=batch_size,
                                  on_batch=lambda run: bar.advance(task, len(run.keys)), plan_filters=plan_filters)
    if not runs:
        return
    from imago_pipeline.core.catalog import Catalog

    ids = [int(key) for run in runs for key in run.keys]
    statuses = [image.status for image in Catalog.connect(settings.catalog_url).work.images_by_id(ids).values()]
    failed_runs = [r for r in runs if not r.success]
    failed_images = statuses.count("failed")
    out.print(f"{total} images reprocessed in {len(runs)} Dagster runs: {statuses.count('done')} done, "
              f"{failed_images} failed; {len(failed_runs)} runs failed")
    if failed_runs or failed_images:
        raise typer.Exit(1)
