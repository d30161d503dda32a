"""Benchmark: what grows with the number of `images` partitions (one per image) on one machine.

For each N it builds a fresh home holding N processed images: the embedded SQLite instance `imago` writes
and, with `--postgres`, the production storage on scratch databases of that server. Then it measures:

- the upload sensor's tick with N existing partitions and a batch of new pending uploads (median of
  `--ticks` evaluations of the real `upload_sensor`; the images it takes into work are put back between
  ticks, outside the timing, so each sees the same state);
- the `exif` asset's partitions page in headless Chromium, from navigation until the materialized count
  is drawn, against `dagster-webserver` serving the real code location on that instance; and the GraphQL
  query behind its health bar (the page's own `PartitionHealthQuery`, replayed), the first time (the
  server builds its partition status cache) and after;
- the instance calls that read every partition key (`get_dynamic_partitions`, which the sensor and
  `imago ingest` make for batches over 50 images) or every materialization (`get_materialized_partitions`).

How the N images are made, and why it is representative: the catalog rows are inserted in bulk (per-image
work is not what is measured), the partitions are added in one request as the sensor adds a batch, and
the materializations come from ranged runs (`--run-size` images each) of stand-ins of the six per-image
assets: the real keys, partitions, dependencies, code versions and checks, read from the code location,
returning metadata of the same shape and doing no work. Their event log is the one real runs write (a
planned event per asset and run, a materialization per image and asset in batched transactions, check
evaluations, step and run events), through the same storage classes and the same batching switches.
Only the number of runs differs: N / run size instead of N / `IMAGO_BATCH_SIZE`.

    .venv/bin/python bench/partition_scale.py [--partitions 1000,10000,50000] [--postgres URL] [--ticks 5]

`--ever-ingested 10000,100000,1000000 --window 10000` measures the partition window instead
(`partition_window_sensor`): N images ever ingested, of which the newest `--window` still hold partitions
(materialized by stand-in runs as above) and the others were retired after finishing (their partitions
gone, their history kept: one materialization per image and asset in the event log, written in bulk with
the same event shape and metadata as the stand-ins', under one run id per `--run-size` images). Then it
times new ranged runs of `--run-size` images, the partition list and the window sensor's evaluation.

    .venv/bin/python bench/partition_scale.py --ever-ingested 10000,100000,1000000 --window 10000
"""

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg
import httpx
import psutil
import psycopg2
from PIL import Image as PILImage
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, text

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import Image, utcnow
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import build_blob_store
from imago_pipeline.dagster_instance import embedded_instance_yaml, use_batched_dagster_events
from imago_pipeline.defs.batching import PartitionRange
from imago_pipeline.defs.enrichment.assets import PER_IMAGE_ASSET_KEYS, image_partitions
from imago_pipeline.defs.intake.sensors import upload_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.in_process import QUIET_CONSOLE

console = Console(width=160)
POSTGRES_DAGSTER_YAML = """\
storage:
  postgres:
    postgres_url: {url}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
nux:
  enabled: false
"""


def median_time(call: Callable[[], object], times: int,
                before: Callable[[], object] | None = None) -> tuple[float, object]:
    """Median wall time of `times` calls (each after `before`, which is not timed), and the last result."""
    seconds, result = [], None
    for _ in range(times):
        if before:
            before()
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


# --- a home with N processed images -----------------------------------------------------------------------

@contextmanager
def scratch_home(backend: str, n: int, postgres_admin: str | None) -> Iterator[ImagoSettings]:
    """A fresh IMAGO_HOME and DAGSTER_HOME: SQLite files under a temporary folder, or two scratch Postgres
    databases (Dagster and the catalog must not share one: both keep their migrations in `alembic_version`)."""
    root = Path(tempfile.mkdtemp(prefix=f"imago-scale-{n}-"))
    dagster_home = root / "dagster"
    dagster_home.mkdir()
    names = []
    if backend == "sqlite":
        settings = ImagoSettings(home=root / "imago", database_url=None, workers=2)
        (dagster_home / "dagster.yaml").write_text(
            embedded_instance_yaml(dagster_home))
    else:
        tag = f"imago_scale_{n}_{uuid.uuid4().hex[:8]}"
        names = [f"{tag}_dagster", f"{tag}_catalog"]
        for name in names:
            _postgres_admin(postgres_admin, f'CREATE DATABASE "{name}"')
        base = postgres_admin.rsplit("/", 1)[0].replace("postgresql+psycopg2://", "postgresql://")
        settings = ImagoSettings(home=root / "imago", database_url=f"{base}/{names[1]}".replace(
            "postgresql://", "postgresql+psycopg2://"), workers=2)
        (dagster_home / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML.format(url=f"{base}/{names[0]}"))
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    try:
        yield settings
    finally:
        for name in names:
            _postgres_admin(postgres_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def _postgres_admin(url: str, statement: str) -> None:
    connection = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    try:
        connection.cursor().execute(statement)
    finally:
        connection.close()


def insert_processed_images(catalog: Catalog, n: int) -> tuple[int, list[int]]:
    """N `done` images for one tenant, inserted in bulk (their partitions and materializations come next)."""
    tenant = catalog.clients.get_or_create("bench")
    now = utcnow()
    with catalog.session() as session:
        for start in range(0, n, 10_000):
            session.execute(insert(Image), [
                {"tenant_id": tenant.id, "sha256": hashlib.sha256(f"bench-{i}".encode()).hexdigest(),
                 "original_name": f"photo-{i:07d}.jpg", "media_type": "image/jpeg", "byte_size": 2_000_000,
                 "width": 4000, "height": 3000, "blob_key": f"tenants/{tenant.id}/originals/{i}", "status": "done",
                 "created_at": now - timedelta(seconds=n - i), "updated_at": now, "processed_at": now}
                for i in range(start, min(n, start + 10_000))])
        session.commit()
        ids = [row[0] for row in session.execute(Image.__table__.select().with_only_columns(Image.id)
                                                 .order_by(Image.id))]
    return tenant.id, ids


def register_pending_uploads(catalog: Catalog, settings: ImagoSettings, tenant_id: int, count: int) -> list[int]:
    """`count` real (small, distinct) PNG uploads, registered as the API registers them: status pending."""
    store = build_blob_store(settings)
    ids = []
    for i in range(count):
        buffer = io.BytesIO()
        PILImage.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 128)).save(buffer, format="PNG")
        ids.append(register_image(catalog, store, settings, tenant_id=tenant_id, filename=f"new-{i}.png",
                                  data=buffer.getvalue()).image.id)
    return ids


def stand_in_job(settings: ImagoSettings) -> dg.JobDefinition:
    """`process_images` with stand-ins of the per-image assets: what the code location declares for each
    (dependencies, code version, checks), metadata of the same shape as the real batches', no work."""
    from imago_pipeline.definitions import build_definitions

    graph = build_definitions(settings).resolve_asset_graph()
    assets = [dg.AssetSpec("uploads")]
    for name in PER_IMAGE_ASSET_KEYS:
        node = graph.get(dg.AssetKey(name))
        assets.append(_stand_in(name, [k.to_user_string() for k in node.parent_keys], node.code_version,
                                [check.name for check in node.check_keys]))
    job = dg.define_asset_job("process_images", selection=dg.AssetSelection.assets(*PER_IMAGE_ASSET_KEYS),
                              executor_def=dg.in_process_executor)
    return dg.Definitions(assets=assets, jobs=[job]).resolve_job_def("process_images")


def _stand_in(name: str, deps: list[str], code_version: str | None, checks: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name=name, deps=deps, code_version=code_version, partitions_def=image_partitions,
              backfill_policy=dg.BackfillPolicy.single_run(), group_name="enrichment",
              check_specs=[dg.AssetCheckSpec(check, asset=name) for check in checks])
    def stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        images = len(context.partition_keys)
        return dg.MaterializeResult(
            metadata={"images": images, "succeeded": images, "failed": 0, "missing_from_catalog": 0,
                      "duration_s": dg.MetadataValue.float(images * 0.05), "images_per_s": dg.MetadataValue.float(20.0),
                      "p50_image_ms": dg.MetadataValue.float(48.5), "max_image_ms": dg.MetadataValue.float(310.2),
                      "code_version": code_version or "", "lake_files_written": 1},
            check_results=[dg.AssetCheckResult(check_name=check, passed=True,
                                               metadata={"checked": images, "failed": 0}) for check in checks])

    return stand_in


def materialize(instance: dg.DagsterInstance, job: dg.JobDefinition, keys: list[str], run_size: int) -> dict:
    """Ranged runs over `keys`: how many, the median wall time of one (creating it included), and how often
    the last one read the whole partition list (Dagster resolves a range of dynamic partitions from it)."""
    reads = []
    read_all = instance.get_dynamic_partitions
    runs = []
    for start in range(0, len(keys), run_size):
        batch = PartitionRange(keys[start:start + run_size])
        reads.clear()
        instance.get_dynamic_partitions = lambda *args, **kwargs: reads.append(1) or read_all(*args, **kwargs)
        started = time.perf_counter()
        try:
            job.execute_in_process(instance=instance, tags=batch.tags, run_config=QUIET_CONSOLE, raise_on_error=True)
        finally:
            del instance.get_dynamic_partitions
        runs.append(time.perf_counter() - started)
    return {"runs": len(runs), "run_s": statistics.median(runs), "partition_list_reads_per_run": len(reads)}


def dagster_storage(instance: dg.DagsterInstance, backend: str) -> tuple[int, float]:
    """Event log rows, and the size of Dagster's storage (SQLite files, or the Postgres database)."""
    from dagster._core.storage.event_log import SqlEventLogStorageTable
    from sqlalchemy import func, select, text

    with instance.event_log_storage.index_connection() as connection:
        events = connection.execute(select(func.count()).select_from(SqlEventLogStorageTable)).scalar_one()
        if backend == "postgres":
            size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    if backend == "sqlite":
        size = sum(p.stat().st_size for p in Path(os.environ["DAGSTER_HOME"]).rglob("*") if p.is_file())
    return events, size / 2**20


# --- measurements -----------------------------------------------------------------------------------------

def sensor_tick(instance: dg.DagsterInstance, settings: ImagoSettings, catalog: Catalog, waiting: list[int],
                ticks: int) -> tuple[float, dg.SensorResult]:
    """The median evaluation of the real `upload_sensor` taking the `waiting` images into work (put back to
    their status between ticks, untimed, so every tick sees the same state), and the last result."""
    resources = build_resources(settings)
    before = {i: (image.status, image.requeue_stages) for i, image in catalog.work.images_by_id(waiting).items()}

    def put_back():
        with catalog.session() as session:
            for image_id, (status, stages) in before.items():
                session.execute(text("UPDATE images SET status = :s, claim = NULL, claimed_at = NULL, "
                                     "requeue_stages = :r WHERE id = :i"),
                                {"s": status, "r": json.dumps(stages) if stages else None, "i": image_id})
            session.commit()

    def tick():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return upload_sensor(context)

    seconds, result = median_time(tick, ticks, before=put_back)
    assert isinstance(result, dg.SensorResult), result
    return seconds, result


HEALTH_QUERY_NAME = "PartitionHealthQuery"


@contextmanager
def webserver(settings: ImagoSettings) -> Iterator[str]:
    """`dagster-webserver` on the instance, serving the real code location; stopped with its process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "IMAGO_HOME": str(settings.home), "IMAGO_DATABASE_URL": settings.catalog_url,
           "IMAGO_WORKERS": "2"}
    log = tempfile.NamedTemporaryFile("w", prefix="dagster-webserver-", suffix=".log", delete=False)  # noqa: SIM115  (closed when the server stops)
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-m", "imago_pipeline.definitions",
               "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dagster-webserver did not start; see {log.name}")
            try:
                entries = graphql(base, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")
                if entries["workspaceOrError"]["locationEntries"][0]["loadStatus"] == "LOADED":
                    break
            except (httpx.HTTPError, KeyError, IndexError):
                pass
            time.sleep(0.5)
        yield base
    except BaseException:
        console.print(f"dagster-webserver output: {log.name}")
        raise
    else:
        Path(log.name).unlink()
    finally:
        try:
            processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            os.killpg(server.pid, signal.SIGINT)
        except (psutil.NoSuchProcess, ProcessLookupError):
            processes = []
        _, alive = psutil.wait_procs(processes, timeout=20)
        for process in alive:
            process.kill()
        server.wait(timeout=10)
        log.close()


def graphql(base: str, query: str, variables: dict | None = None, operation: str | None = None) -> dict:
    body = {"query": query, "variables": variables or {}}
    if operation:
        body["operationName"] = operation
    answer = httpx.post(f"{base}/graphql", json=body, timeout=600)
    answer.raise_for_status()
    data = answer.json()
    if data.get("errors"):
        raise RuntimeError(data["errors"])
    return data["data"]


def browser_loads(base: str, n: int, loads: int) -> dict:
    """In fresh browser contexts (an operator's first visit each time): the `exif` partitions page until
    "Materialized (N)" is drawn, with the duration of the page's own partition-health request; then the
    enrichment group's lineage until its per-image nodes are drawn materialized."""
    from playwright.sync_api import sync_playwright

    from tests.browser import NODE_COLOURS, chromium_path

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    page_s, health_s, lineage_s, health_body = [], [], [], {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            for _ in range(loads):
                context = browser.new_context(viewport={"width": 1440, "height": 1000})
                page = context.new_page()
                health = []
                page.on("requestfinished", lambda r, found=health: found.append(r)
                        if f"op={HEALTH_QUERY_NAME}" in r.url else None)
                started = time.perf_counter()
                page.goto(f"{base}/assets/exif?view=partitions")
                page.wait_for_function("n => document.body.innerText.includes(`Materialized (${n})`)",
                                       arg=n, timeout=600_000, polling=50)
                page_s.append(time.perf_counter() - started)
                health_s.append(health[0].timing["responseEnd"] / 1000)
                health_body.setdefault("body", health[0].post_data_json)
                started = time.perf_counter()
                page.goto(f"{base}/locations/imago_pipeline.definitions/asset-groups/enrichment")
                # every per-image node drawn materialized: green boxes at the zoom that fits the graph, or
                # "100% filled" where the graph is small enough to be drawn in detail
                page.wait_for_function(
                    f"names => Object.values(({NODE_COLOURS})(names)).every(s => s.includes('background-green'))"
                    " || document.body.innerText.split('100% filled').length - 1 >= names.length",
                    arg=list(PER_IMAGE_ASSET_KEYS), timeout=600_000, polling=50)
                lineage_s.append(time.perf_counter() - started)
                context.close()
        finally:
            browser.close()
    return {"page_first_s": page_s[0], "page_s": statistics.median(page_s[1:] or page_s),
            "health_first_s": health_s[0], "health_s": statistics.median(health_s[1:] or health_s),
            "lineage_s": statistics.median(lineage_s), "health_body": health_body["body"]}


def health_query(base: str, body: dict, n: int) -> Callable[[], None]:
    def call() -> None:
        data = graphql(base, body["query"], body["variables"], body.get("operationName"))
        statuses = data["assetNodeOrError"]["assetPartitionStatuses"]
        assert len(statuses["materializedPartitions"]) == n, len(statuses["materializedPartitions"])
    return call


# --- one N on one backend ---------------------------------------------------------------------------------

def run_one(backend: str, n: int, args) -> dict:
    figures: dict = {"backend": backend, "partitions": n}
    with scratch_home(backend, n, args.postgres) as settings:
        use_batched_dagster_events()
        catalog = Catalog.connect(settings.catalog_url)
        with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
            started = time.perf_counter()
            tenant_id, ids = insert_processed_images(catalog, n)
            keys = [str(i) for i in ids]
            figures["catalog_rows_s"] = time.perf_counter() - started

            started = time.perf_counter()
            instance.add_dynamic_partitions(image_partitions.name, keys)
            figures["add_partitions_s"] = time.perf_counter() - started

            job = stand_in_job(settings)
            started = time.perf_counter()
            figures.update(materialize(instance, job, keys, args.run_size))
            figures["materialize_s"] = time.perf_counter() - started
            console.print(f"[{backend} {n:,}] {n:,} images, {figures['runs']} runs materialized in "
                          f"{figures['materialize_s']:.0f} s")

            figures["events"], figures["dagster_storage_mb"] = dagster_storage(instance, backend)
            # new uploads: the sensor adds them as partitions, in ranged runs
            pending = register_pending_uploads(catalog, settings, tenant_id, args.pending)
            figures["sensor_tick_s"], result = sensor_tick(instance, settings, catalog, pending, args.ticks)
            assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [[str(i) for i in pending]]
            # users asking to reprocess old images: runs over existing partitions, in partition order
            scoped = catalog.for_tenant(tenant_id)
            requeued = ids[:: max(1, n // args.requeued)][:args.requeued]
            for image_id in requeued:
                scoped.request_reprocess(image_id)
            catalog.work.finish(pending, [])  # the new uploads processed: only the requests are waiting
            figures["requeue_tick_s"], result = sensor_tick(instance, settings, catalog, requeued, args.ticks)
            assert sorted(r.partition_key for r in result.run_requests) == sorted(map(str, requeued))
            figures["get_dynamic_partitions_s"], found = median_time(
                lambda: instance.get_dynamic_partitions(image_partitions.name), args.ticks)
            assert len(found) == n
            figures["has_dynamic_partition_s"], _ = median_time(
                lambda: instance.has_dynamic_partition(image_partitions.name, keys[n // 2]), args.ticks)
            figures["get_materialized_partitions_s"], materialized = median_time(
                lambda: instance.get_materialized_partitions(dg.AssetKey("exif")), 3)
            assert len(materialized) == n
        catalog.dispose()

        with webserver(settings) as base:
            figures.update(browser_loads(base, n, args.page_loads))
            figures["graphql_health_s"], _ = median_time(health_query(base, figures.pop("health_body"), n), 3)
            stats = ('{ assetNodeOrError(assetKey: {path: ["exif"]}) { ... on AssetNode { partitionStats '
                     '{ numMaterialized numPartitions numFailed numMaterializing } } } }')
            figures["graphql_stats_s"], data = median_time(lambda: graphql(base, stats), 3)
            assert data["assetNodeOrError"]["partitionStats"]["numMaterialized"] == n
    console.print(json.dumps(figures))
    return figures


# --- the partition window: N ever ingested, a window of partitions ---------------------------------------

def record_history(instance: dg.DagsterInstance, job: dg.JobDefinition, keys: list[str], run_size: int) -> None:
    """What ranged runs of the stand-ins leave in the event log for `keys`, written in bulk: a
    materialization per image and asset with the stand-ins' metadata, one run id per `run_size` images.
    Each asset's event is serialized once with placeholders, then copied per image (a million images are
    six million rows: serializing each would take most of an hour)."""
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.storage.event_log import SqlEventLogStorageTable

    if not keys:
        return
    storage = instance.event_log_storage
    assets = [node.key for node in job.asset_layer.asset_graph.asset_nodes
              if node.key.to_user_string() in PER_IMAGE_ASSET_KEYS]
    metadata = {"images": run_size, "succeeded": run_size, "failed": 0, "missing_from_catalog": 0,
                "duration_s": dg.MetadataValue.float(run_size * 0.05), "images_per_s": dg.MetadataValue.float(20.0),
                "p50_image_ms": dg.MetadataValue.float(48.5), "max_image_ms": dg.MetadataValue.float(310.2),
                "code_version": "v", "lake_files_written": 1}

    def event(asset: dg.AssetKey, key: str, run_id: str, at: float) -> EventLogEntry:
        step = asset.to_user_string()
        return EventLogEntry(
            error_info=None, level=logging.DEBUG, user_message="", run_id=run_id, timestamp=at, step_key=step,
            job_name="process_images", dagster_event=DagsterEvent(
                DagsterEventType.ASSET_MATERIALIZATION.value, "process_images", step_key=step,
                event_specific_data=StepMaterializationData(dg.AssetMaterialization(
                    asset_key=asset, partition=key, metadata=metadata)), message=f"Materialized value {step}."))

    at = time.time() - 86400 * 30
    templates = [storage._event_to_row(event(asset, "KEY@@", "RUN@@", at)) for asset in assets]
    rows = []

    def flush() -> None:
        with storage.index_connection() as connection:
            connection.execute(SqlEventLogStorageTable.insert(), rows)
        rows.clear()

    for start in range(0, len(keys), run_size):
        run_id = str(uuid.uuid4())
        for template in templates:
            for key in keys[start:start + run_size]:
                rows.append({**template, "run_id": run_id, "partition": key,
                             "event": template["event"].replace('"KEY@@"', f'"{key}"').replace("RUN@@", run_id)})
        if len(rows) >= 60_000:
            flush()
    if rows:
        flush()
    for asset in assets:  # the asset's latest materialization, through the storage's own path
        storage.store_event(event(asset, keys[-1], str(uuid.uuid4()), at))


def run_window(backend: str, ever: int, window: int, args) -> dict:
    """N images ever ingested, the newest `window` holding partitions: what a new ranged run costs."""
    from imago_pipeline.defs.intake.sensors import partition_window_sensor

    figures: dict = {"backend": backend, "ever_ingested": ever, "partitions": min(ever, window)}
    with scratch_home(backend, ever, args.postgres) as settings:
        use_batched_dagster_events()
        catalog = Catalog.connect(settings.catalog_url)
        with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
            _, ids = insert_processed_images(catalog, ever + 3 * args.run_size)
            keys = [str(i) for i in ids[:ever]]
            new_keys = [str(i) for i in ids[ever:]]
            retired, kept = keys[:max(0, ever - window)], keys[max(0, ever - window):]
            job = stand_in_job(settings)
            started = time.perf_counter()
            record_history(instance, job, retired, args.run_size)
            figures["history_s"] = time.perf_counter() - started
            instance.add_dynamic_partitions(image_partitions.name, kept)
            started = time.perf_counter()
            materialize(instance, job, kept, args.run_size)
            figures["window_s"] = time.perf_counter() - started
            console.print(f"[{backend} {ever:,}] history of {len(retired):,} retired images in "
                          f"{figures['history_s']:.0f} s, {len(kept):,} partitions in {figures['window_s']:.0f} s")
            figures["events"], figures["dagster_storage_mb"] = dagster_storage(instance, backend)
            # new uploads: added as partitions (as the upload sensor does) and run in ranged batches
            instance.add_dynamic_partitions(image_partitions.name, new_keys)
            figures.update(materialize(instance, job, new_keys, args.run_size))
            figures["get_dynamic_partitions_s"], found = median_time(
                lambda: instance.get_dynamic_partitions(image_partitions.name), args.ticks)
            assert len(found) == len(kept) + len(new_keys)
            resources = build_resources(settings.model_copy(update={"partition_window_days": 7}))

            def window_tick():
                with dg.build_sensor_context(instance=instance, resources=resources) as context:
                    return partition_window_sensor(context)

            figures["window_tick_s"], _ = median_time(window_tick, args.ticks)
        catalog.dispose()
    console.print(json.dumps(figures))
    return figures


WINDOW_COLUMNS = [
    ("partitions", "image partitions (the window)", "{:,}"),
    ("history_s", "writing the retired images' history (s)", "{:.0f}"),
    ("events", "event log rows", "{:,}"), ("dagster_storage_mb", "Dagster storage (MiB)", "{:.0f}"),
    ("run_s", "one ranged run of --run-size new images (s)", "{:.2f}"),
    ("partition_list_reads_per_run", "partition-list reads in a run", "{}"),
    ("get_dynamic_partitions_s", "instance.get_dynamic_partitions (s)", "{:.3f}"),
    ("window_tick_s", "partition_window_sensor tick (s)", "{:.3f}"),
]


COLUMNS = [  # (figure, label, format)
    ("runs", "stand-in runs", "{}"), ("materialize_s", "recording N images (s)", "{:.0f}"),
    ("run_s", "one ranged run of --run-size images (s)", "{:.2f}"),
    ("partition_list_reads_per_run", "partition-list reads in a run", "{}"),
    ("events", "event log rows", "{:,}"), ("dagster_storage_mb", "Dagster storage (MiB)", "{:.0f}"),
    ("sensor_tick_s", "upload_sensor tick, new uploads (s)", "{:.3f}"),
    ("requeue_tick_s", "upload_sensor tick, reprocess requests (s)", "{:.3f}"),
    ("page_first_s", "exif partitions page, first load (s)", "{:.2f}"),
    ("page_s", "exif partitions page, next loads (s)", "{:.2f}"),
    ("health_first_s", "its PartitionHealthQuery, first (s)", "{:.3f}"),
    ("health_s", "its PartitionHealthQuery, next (s)", "{:.3f}"),
    ("graphql_health_s", "PartitionHealthQuery replayed (s)", "{:.3f}"),
    ("graphql_stats_s", "partitionStats query (s)", "{:.3f}"),
    ("lineage_s", "enrichment lineage page (s)", "{:.2f}"),
    ("get_dynamic_partitions_s", "instance.get_dynamic_partitions (s)", "{:.3f}"),
    ("has_dynamic_partition_s", "instance.has_dynamic_partition (s)", "{:.4f}"),
    ("get_materialized_partitions_s", "instance.get_materialized_partitions (s)", "{:.3f}"),
]


def print_table(rows: list[dict]) -> None:
    window = "ever_ingested" in rows[0]
    title = ("A ranged run against images ever ingested, with a window of partitions (medians)" if window
             else "What grows with the number of image partitions N (medians)")
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for row in rows:
        n = row["ever_ingested"] if window else row["partitions"]
        table.add_column(f"{row['backend']}\nN = {n:,}", justify="right")
    for key, label, fmt in WINDOW_COLUMNS if window else COLUMNS:
        table.add_row(label, *[fmt.format(row[key]) for row in rows])
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", default="1000,10000,50000", help="comma-separated N values")
    parser.add_argument("--postgres", help="admin URL of a Postgres server (scratch databases are made and dropped)")
    parser.add_argument("--no-sqlite", action="store_true", help="only Postgres")
    parser.add_argument("--run-size", type=int, default=500, help="images per stand-in run")
    parser.add_argument("--pending", type=int, default=100, help="new uploads waiting at each sensor tick")
    parser.add_argument("--requeued", type=int, default=10, help="old images asked to be reprocessed (spread out)")
    parser.add_argument("--ticks", type=int, default=5, help="sensor ticks (and instance calls) per median")
    parser.add_argument("--page-loads", type=int, default=3, help="asset page loads (the first, then a median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--ever-ingested", help="comma-separated N values: the partition window mode")
    parser.add_argument("--window", type=int, default=10_000, help="partitions kept (the window mode)")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the sensor logs every tick it is asked for
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgres"] if args.postgres else [])
    rows = []
    if args.ever_ingested:
        measure = [(backend, n, lambda b, n: run_window(b, n, args.window, args))
                   for n in map(int, args.ever_ingested.split(",")) for backend in backends]
    else:
        measure = [(backend, n, lambda b, n: run_one(b, n, args))
                   for n in map(int, args.partitions.split(",")) for backend in backends]
    for backend, n, run in measure:
        rows.append(run(backend, n))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
    print_table(rows)


if __name__ == "__main__":
    main()
