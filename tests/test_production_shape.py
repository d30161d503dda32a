"""The production shape end to end, as docker-compose runs it but on loopback processes.

Catalog and Dagster storage on the real Postgres (the repository's `dagster.yaml`), blobs on a real
S3-compatible server, the code location in a gRPC code server, the daemon loading it through a workspace
file, the API under uvicorn. Upload over HTTP, the upload sensor ticks in the daemon, batched runs are
launched through the run queue, every enrichment runs, and the API answers queries.
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
import httpx
import psutil
import pytest
from sqlalchemy.engine import make_url

from imago_pipeline.core.stores.blobs import iter_s3_objects, s3_client
from tests import postgres
from tests.conftest import REPO, SAMPLES, SERVICES
from tests.http_server import free_port
from tests.s3_server import CREDENTIALS

pytestmark = [pytest.mark.slow, SERVICES, pytest.mark.postgres, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent
NAMES = ["Canon_40D.jpg", "Nikon_D70.jpg", "phototest.tif", "PaintTool_sample.jpg", "canon_hdr_YES.jpg",
         "hopper_orientation_6.webp"]


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.fixture
def production(tmp_path, postgres_admin_url, s3_endpoint):
    catalog_db, dagster_db = (f"imago_prod_{uuid.uuid4().hex[:8]}" for _ in range(2))
    catalog_url = postgres.create_database(postgres_admin_url, catalog_db)
    dagster_url = make_url(postgres.create_database(postgres_admin_url, dagster_db))
    bucket = f"imago-prod-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint_url=s3_endpoint, region="us-east-1", **CREDENTIALS).create_bucket(Bucket=bucket)

    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (REPO / "dagster.yaml").read_text()
    if dagster_url.port and dagster_url.port != 5432:
        config = config.replace("port: 5432", f"port: {dagster_url.port}")
    (home / "dagster.yaml").write_text(config)
    grpc_port, api_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
                         f"      location_name: imago\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": dagster_url.host or "127.0.0.1",
           "DAGSTER_PG_USER": dagster_url.username or "postgres", "DAGSTER_PG_PASSWORD": dagster_url.password or "",
           "DAGSTER_PG_DB": dagster_db, "IMAGO_HOME": str(tmp_path / "imago"), "IMAGO_DATABASE_URL": catalog_url,
           "IMAGO_BLOB_BACKEND": "s3", "IMAGO_S3_ENDPOINT_URL": s3_endpoint, "IMAGO_S3_BUCKET": bucket,
           "IMAGO_S3_ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
           "IMAGO_S3_SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"], "IMAGO_BATCH_SIZE": "3",
           "IMAGO_LOG_FORMAT": "text", "OMP_THREAD_LIMIT": "1"}
    for name in ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
        env.pop(name, None)
    log = (tmp_path / "services.log").open("w")
    commands = {
        "code": [str(BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(grpc_port),
                 "-m", "imago_pipeline.definitions"],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        "api": [str(BIN / "uvicorn"), "imago_api.main:create_app", "--factory", "--host", "127.0.0.1",
                "--port", str(api_port), "--no-access-log"],
    }
    processes = {}
    try:
        processes["code"] = subprocess.Popen(commands["code"], env=env, cwd=tmp_path, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port)],
                                     capture_output=True, env=env).returncode == 0, 120, "the code server")
        for name in ("daemon", "api"):
            processes[name] = subprocess.Popen(commands[name], env=env, cwd=tmp_path, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200, 60, "the API")
        key = subprocess.run([str(BIN / "imago"), "admin", "create-client", "prod", "--plan", "enterprise"],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        yield {"api": f"http://127.0.0.1:{api_port}", "key": key, "env": env, "home": home, "bucket": bucket,
               "s3": s3_endpoint, "log": tmp_path / "services.log", "code_server": processes["code"]}
    finally:
        for process in processes.values():
            children = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
            os.killpg(process.pid, signal.SIGTERM) if process.poll() is None else None
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            psutil.wait_procs(children, timeout=10)
        log.close()
        postgres.drop_database(postgres_admin_url, catalog_db)
        postgres.drop_database(postgres_admin_url, dagster_db)


def test_upload_sensor_batched_runs_every_enrichment_and_queries_on_postgres_and_s3(production, monkeypatch):
    headers = {"X-API-Key": production["key"]}
    with httpx.Client(base_url=production["api"], headers=headers, timeout=60) as client:
        ids = []
        for name in NAMES:
            response = client.post("/images", files={"file": (name, (SAMPLES / name).read_bytes())})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        try:
            _wait(lambda: all(client.get(f"/images/{i}").json()["status"] in ("done", "failed") for i in ids),
                  600, "every image processed by the daemon's runs")
        except TimeoutError:
            print(production["log"].read_text()[-8000:])
            raise
        details = {name: client.get(f"/images/{i}").json() for name, i in zip(NAMES, ids)}
        for name, detail in details.items():
            assert detail["status"] == "done", (name, detail["error"])
            assert [s["status"] for s in detail["stages"]] == ["done"] * 6, name
            assert detail["thumbnail"] and detail["ocr"] and detail["ai"] and detail["classification"], name
        assert details["Canon_40D.jpg"]["exif"]["model"] == "Canon EOS 40D"
        assert "quick brown dog" in details["phototest.tif"]["ocr"]["text"]
        found = client.get("/images", params={"q": "lazy fox"}).json()
        assert [i["original_name"] for i in found["items"]] == ["phototest.tif"]
        canon = client.get("/images", params={"camera_make": "canon"}).json()
        assert {i["original_name"] for i in canon["items"]} == {"Canon_40D.jpg", "canon_hdr_YES.jpg"}
        link = client.get(f"/images/{ids[0]}/download-url").json()["url"]
        assert httpx.get(link).headers["location"].startswith(production["s3"])  # S3 serves the bytes
        assert httpx.get(link, follow_redirects=True).content == (SAMPLES / NAMES[0]).read_bytes()

    # every run's processes (run worker, forkserver, pool workers) ended with it: the code server is alone
    code_server = psutil.Process(production["code_server"].pid)

    def runs_processes():
        alive = []
        for process in code_server.children(recursive=True):
            try:  # an exited worker the code server has not reaped yet is a zombie: gone, holding nothing
                if process.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(process.cmdline()):
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        return alive

    _wait(lambda: not runs_processes(), 60, "the runs' processes to end")

    # the blobs are in the bucket, none on the local disk
    objects = [o["Key"] for o in iter_s3_objects(
        s3_client(endpoint_url=production["s3"], region="us-east-1", **CREDENTIALS), production["bucket"], "")]
    assert sum("/originals/" in k for k in objects) == 6 and sum("/thumbnails/" in k for k in objects) == 6
    # Dagster's runs are in Postgres: batches of 3 images, launched from the queue by the daemon
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, production["env"][name])
    with dg.DagsterInstance.from_config(str(production["home"])) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs(dg.RunsFilter(job_name="process_images"))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
            (r.run_id[:8], r.status.value, {k: v for k, v in r.tags.items() if 'retry' in k or 'range' in k})
            for r in runs]
        batch_sizes = sorted(int(r.tags.get("imago/batch_size", 1)) for r in runs)
        assert sum(batch_sizes) == 6 and max(batch_sizes) <= 3 and len(runs) <= 4
        assert sorted(instance.get_dynamic_partitions("images"), key=int) == [str(i) for i in ids]
