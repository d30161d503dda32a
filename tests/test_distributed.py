"""The distributed executor on more than one "machine": Dagster's Celery executor, two `imago worker`s each
in its own network namespace, reaching Postgres, RabbitMQ and S3 over a bridge as other hosts would.

This machine runs the code server and the daemon (the upload sensor claims the images, the run queue
launches `process_images` runs, each run submits its steps to RabbitMQ); the catalog and Dagster live in
two Postgres databases, blobs and the lake in a bucket of a real S3 server. Every image ends done with its
steps spread over both workers; a worker killed with SIGKILL in the middle of a step loses nothing: the
broker hands the step to the other worker, which runs it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psutil
import pytest
from sqlalchemy.engine import make_url

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import build_blob_store, s3_client
from tests import netns, postgres
from tests.conftest import REPO, SAMPLES, SERVICES, shared
from tests.http_server import free_port
from tests.s3_server import CREDENTIALS, moto_server
from tests.serve_harness import wait_until

pytestmark = [pytest.mark.slow, SERVICES, pytest.mark.postgres, pytest.mark.timeout(1200),
              pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))]
BIN = Path(sys.executable).parent
WORKERS = ("w1", "w2")


def _wait(predicate, timeout: float, what: str, log: Path | None = None):
    """`wait_until`, printing the end of the services' log when it times out."""
    try:
        return wait_until(predicate, timeout, what, interval=0.2)
    except AssertionError:
        if log is not None:
            print(log.read_text()[-12000:])
        raise


@pytest.fixture
def cluster(tmp_path, postgres_admin_url, monkeypatch):
    admin = make_url(postgres_admin_url)
    catalog_db, dagster_db = (f"imago_dist_{uuid.uuid4().hex[:8]}" for _ in range(2))
    postgres.create_database(postgres_admin_url, catalog_db)
    postgres.create_database(postgres_admin_url, dagster_db)
    processes: dict[str, subprocess.Popen] = {}
    log = (tmp_path / "services.log").open("w")
    try:
        with netns.network(list(WORKERS)) as net:
            pg_port, amqp_port = free_port(), free_port()
            with netns.forward(net.host_ip, pg_port, admin.host or "127.0.0.1", admin.port or 5432), \
                    netns.forward(net.host_ip, amqp_port, "127.0.0.1", 5672), \
                    moto_server(net.host_ip) as s3_endpoint:
                # every address is the bridge's: the same for this machine and for the workers' namespaces
                catalog_url = admin.set(host=net.host_ip, port=pg_port, database=catalog_db).render_as_string(
                    hide_password=False)
                bucket = f"imago-dist-{uuid.uuid4().hex[:8]}"
                s3_client(endpoint_url=s3_endpoint, region="us-east-1", **CREDENTIALS).create_bucket(Bucket=bucket)
                home = tmp_path / "dagster_home"
                home.mkdir()
                (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text().replace(
                    "port: 5432", f"port: {pg_port}"))
                grpc_port = free_port()
                workspace = tmp_path / "workspace.yaml"
                workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
                                     "      location_name: imago\n")
                env = {
                    **os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": net.host_ip,
                    "DAGSTER_PG_USER": admin.username or "postgres",
                    "DAGSTER_PG_PASSWORD": admin.password or "", "DAGSTER_PG_DB": dagster_db,
                    "IMAGO_HOME": str(tmp_path / "imago"), "IMAGO_DATABASE_URL": catalog_url,
                    "IMAGO_BLOB_BACKEND": "s3", "IMAGO_S3_ENDPOINT_URL": s3_endpoint, "IMAGO_S3_BUCKET": bucket,
                    "IMAGO_S3_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
                    "IMAGO_S3_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"],
                    "IMAGO_LAKE_URI": f"s3://{bucket}/lake", "IMAGO_EXECUTOR": "celery",
                    "IMAGO_CELERY_BROKER_URL": f"pyamqp://guest:guest@{net.host_ip}:{amqp_port}//",
                    "IMAGO_BATCH_SIZE": "6", "IMAGO_WORKERS": "1", "IMAGO_LOG_FORMAT": "text",
                    "OMP_THREAD_LIMIT": "1"}
                for name in ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
                    env.pop(name, None)
                for name in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_USER",
                             "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
                    monkeypatch.setenv(name, env[name])
                start = {
                    "code": [str(BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(grpc_port), "-m",
                             "imago_pipeline.definitions"],
                    "daemon": [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                    **{w: net.command(w, [str(BIN / "imago"), "worker", "--name", w]) for w in WORKERS},
                }

                def launch(name: str) -> None:
                    processes[name] = subprocess.Popen(start[name], env=env, cwd=tmp_path, stdout=log,
                                                       stderr=subprocess.STDOUT, start_new_session=True)

                launch("code")
                _wait(lambda: subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p",
                                              str(grpc_port)], capture_output=True, env=env).returncode == 0,
                      120, "the code server")
                for name in ("daemon", *WORKERS):
                    launch(name)
                settings = ImagoSettings(home=tmp_path / "imago", database_url=catalog_url, blob_backend="s3",
                                         s3_endpoint_url=s3_endpoint, s3_bucket=bucket,
                                         s3_access_key_id=CREDENTIALS["access_key_id"],
                                         s3_secret_access_key=CREDENTIALS["secret_access_key"])
                with dg.DagsterInstance.get() as instance:
                    yield {"settings": settings, "instance": instance, "processes": processes,
                           "log": tmp_path / "services.log"}
    finally:
        for process in processes.values():
            if process.poll() is None:
                children = psutil.Process(process.pid).children(recursive=True)
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                psutil.wait_procs(children, timeout=10)
        log.close()
        postgres.drop_database(postgres_admin_url, catalog_db)
        postgres.drop_database(postgres_admin_url, dagster_db)


def _upload(settings: ImagoSettings, catalog: Catalog, paths: list[Path]) -> list[int]:
    tenant = catalog.clients.get_or_create("distributed")
    store = build_blob_store(settings)
    return [register_image(catalog, store, settings, tenant_id=tenant.id, filename=p.name, data=p.read_bytes(),
                           priority=30).image.id for p in paths]


def _steps_by_worker(instance: dg.DagsterInstance) -> list[tuple[str, str, str, float]]:
    """(run id, step key, worker name, time) of every step a Celery worker started, from the runs' events."""
    seen = []
    for run in instance.get_runs(dg.RunsFilter(job_name="process_images")):
        for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            if event is None or "in celery worker" not in (event.message or ""):
                continue
            worker = event.engine_event_data.metadata["Celery worker"].value.split("@")[0]
            seen.append((run.run_id, event.step_key, worker, record.timestamp))
    return seen


def _finished(catalog: Catalog, ids: list[int]) -> bool:
    return all(image.status in ("done", "failed") for image in catalog.work.images_by_id(ids).values())


def test_runs_spread_over_two_workers_and_a_killed_worker_loses_nothing(cluster):
    settings, instance, log = cluster["settings"], cluster["instance"], cluster["log"]
    catalog = Catalog.connect(settings.catalog_url)
    try:
        # 1. Twelve real photos: two runs of six, their 14 steps shared by the two workers.
        photos = (sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))[:6]
                  + sorted(shared("catsdogs", "val", "dog").glob("*.jpg"))[:6])
        first = _upload(settings, catalog, photos)
        _wait(lambda: _finished(catalog, first), 600, "the first batch", log)
        images = catalog.work.images_by_id(first)
        assert {i.status for i in images.values()} == {"done"}, {i.id: i.error for i in images.values()}
        steps = _steps_by_worker(instance)
        assert {worker for _, _, worker, _ in steps} == set(WORKERS), steps
        assert len({(run, step) for run, step, _, _ in steps}) == 14

        # 2. Six more; w1 is killed (SIGKILL, with the step's own processes) in the middle of a step.
        before = {(run, step) for run, step, _, _ in steps}
        second = _upload(settings, catalog, [p for p in sorted(SAMPLES.iterdir())
                                             if p.suffix in (".jpg", ".tif", ".webp", ".png")][:6])

        def w1_in_a_step():
            done_steps = set()
            for run in instance.get_runs(dg.RunsFilter(job_name="process_images")):
                for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
                    done_steps.add((run.run_id, record.step_key))
            return next(((run, step) for run, step, worker, _ in _steps_by_worker(instance)
                         if worker == "w1" and (run, step) not in before and (run, step) not in done_steps), None)

        killed_step = _wait(w1_in_a_step, 300, "w1 executing a step of the second batch", log)
        killed_at = time.time()
        os.killpg(cluster["processes"]["w1"].pid, signal.SIGKILL)
        _wait(lambda: _finished(catalog, second), 600, "the second batch after w1 was killed", log)
        images = catalog.work.images_by_id(second)
        assert {i.status for i in images.values()} == {"done"}, {i.id: i.error for i in images.values()}
        # the step w1 was executing ran again, on w2
        again = [(worker, at) for run, step, worker, at in _steps_by_worker(instance)
                 if (run, step) == killed_step and at >= killed_at - 1]
        assert ("w2" in [worker for worker, _ in again]), (killed_step, again)
        # and every run succeeded (each ends a moment after its summary step finished its images)
        _wait(lambda: all(run.is_finished for run in instance.get_runs(dg.RunsFilter(job_name="process_images"))),
              60, "the runs to end", log)
        runs = instance.get_runs(dg.RunsFilter(job_name="process_images"))
        assert len(runs) >= 3 and {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
    finally:
        catalog.dispose()
