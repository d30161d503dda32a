"""Clients, rate limits, quotas, reprocessing, erasure, health, metrics and logs, over real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from imago_api.main import create_app
from imago_pipeline.core.config import ImagoSettings, Plan
from imago_pipeline.in_process import get_instance, process_images
from tests.conftest import REPO, SAMPLES
from tests.http_server import serve

ADMIN_KEY = "operator-key-for-the-operations-tests"


@pytest.fixture
def api(settings):
    settings = settings.model_copy(update={
        "admin_api_key": SecretStr(ADMIN_KEY),
        "plans": {"free": Plan(rate_limit="1000/minute", quota_bytes=None),
                  "tiny": Plan(rate_limit="3/minute", quota_bytes=None)},
    })
    app = create_app(settings)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield client, app, settings


def _admin(client, method, path, **kwargs):
    return client.request(method, path, headers={"X-API-Key": ADMIN_KEY}, **kwargs)


def _upload(client, key, path, name=None):
    return client.post("/images", headers={"X-API-Key": key},
                       files={"file": (name or path.name, path.read_bytes(), "image/jpeg")})


def test_client_lifecycle_keys_shown_once_scopes_rotation_soft_delete(api):
    client, app, _ = api
    created = _admin(client, "POST", "/auth/clients", json={"name": "acme", "scopes": ["images:read"]})
    assert created.status_code == 201, created.text
    body = created.json()
    key, client_id = body["api_key"], body["id"]
    assert key.startswith("imk_") and body["scopes"] == ["images:read"] and body["active_keys"] == 1
    assert _admin(client, "POST", "/auth/clients", json={"name": "acme"}).status_code == 409
    shown = _admin(client, "GET", f"/auth/clients/{client_id}").json()
    assert "api_key" not in shown and key not in json.dumps(_admin(client, "GET", "/auth/clients").json())

    headers = {"X-API-Key": key}
    assert client.get("/images", headers=headers).status_code == 200
    assert _upload(client, key, SAMPLES / "Canon_40D.jpg").status_code == 403
    patched = _admin(client, "PATCH", f"/auth/clients/{client_id}",
                     json={"scopes": ["images:read", "images:write"], "plan": "tiny", "quota_bytes": 10**6})
    assert patched.status_code == 200 and patched.json()["rate_limit"] == "3/minute"
    assert patched.json()["quota_bytes"] == 10**6
    assert _upload(client, key, SAMPLES / "Canon_40D.jpg").status_code == 201  # the same key, new scopes
    assert _admin(client, "PATCH", f"/auth/clients/{client_id}", json={"plan": "gold"}).status_code == 422
    assert _admin(client, "PATCH", f"/auth/clients/{client_id}", json={"scopes": ["root"]}).status_code == 422
    _admin(client, "PATCH", f"/auth/clients/{client_id}", json={"plan": "free", "quota_bytes": None})
    assert _admin(client, "GET", f"/auth/clients/{client_id}").json()["quota_bytes"] is None

    rotated = _admin(client, "POST", f"/auth/clients/{client_id}/rotate-key").json()
    assert rotated["api_key"] != key and rotated["active_keys"] == 1
    assert client.get("/images", headers=headers).status_code == 401
    new_headers = {"X-API-Key": rotated["api_key"]}
    assert client.get("/images", headers=new_headers).status_code == 200

    deleted = _admin(client, "DELETE", f"/auth/clients/{client_id}")
    assert deleted.status_code == 200 and deleted.json()["disabled_at"]
    assert client.get("/images", headers=new_headers).status_code == 401
    assert client_id not in [c["id"] for c in _admin(client, "GET", "/auth/clients").json()]
    assert client_id in [c["id"] for c in _admin(client, "GET", "/auth/clients?include_disabled=true").json()]
    assert _admin(client, "DELETE", f"/auth/clients/{client_id}").status_code == 404
    assert app.state.catalog.for_tenant(client_id).storage_used()[1] == 1  # soft: the images stay


def test_bootstrap_cli_prints_the_first_key_once(tmp_path, database_url):
    env = {"IMAGO_HOME": str(tmp_path / "imago"), "IMAGO_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    imago = [sys.executable, "-m", "imago_pipeline"]
    made = subprocess.run([*imago, "admin", "create-client", "root", "--scopes", "admin,images:read"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("imk_") and "shown once" in made.stderr
    again = subprocess.run([*imago, "admin", "create-client", "root"], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 1 and "imk_" not in again.stdout + again.stderr
    app = create_app(ImagoSettings(home=tmp_path / "imago", database_url=database_url))
    with serve(app) as base_url:
        listed = httpx.get(f"{base_url}/auth/clients", headers={"X-API-Key": key})
    assert listed.status_code == 200 and [c["name"] for c in listed.json()] == ["root"]


def test_rate_limit_per_client_answers_429_with_retry_after(api):
    client, app, _ = api
    catalog = app.state.catalog
    limited = catalog.clients.issue_key(catalog.clients.create("small", plan="tiny").id)
    other = catalog.clients.issue_key(catalog.clients.create("big").id)
    answers = [client.get("/images", headers={"X-API-Key": limited}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "3 per 1 minute"
    assert [a.headers.get("X-RateLimit-Remaining") for a in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limited" and "tiny" in refused.json()["error"]["message"]
    assert client.get("/images", headers={"X-API-Key": other}).status_code == 200  # per client


def test_storage_quota_is_enforced_at_upload_and_shown_with_usage(api):
    client, app, _ = api
    first, second = SAMPLES / "Canon_40D.jpg", SAMPLES / "Nikon_D70.jpg"
    quota = first.stat().st_size + second.stat().st_size // 2
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("quoted", quota_bytes=quota).id)
    accepted = _upload(client, key, first)
    assert accepted.status_code == 201
    refused = _upload(client, key, second)
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["quota_bytes"] == quota
    assert error["used_bytes"] == first.stat().st_size and "quota" in error["message"]
    assert _upload(client, key, first, "again.jpg").status_code == 200  # a duplicate costs nothing
    usage = client.get("/images", headers={"X-API-Key": key}).json()["usage"]
    assert usage == {"images": 1, "bytes_used": first.stat().st_size, "quota_bytes": quota}
    tenant_folder = Path(app.state.settings.blob_root) / "tenants" / str(catalog.clients.by_name("quoted").id)
    stored = [p.name for p in tenant_folder.rglob("*") if p.is_file()]
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert stored == [f"{sha}-{accepted.json()['uuid']}"]  # the refused upload stored nothing


def test_reprocess_requeues_for_the_sensor(api):
    client, app, _ = api
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("re").id)
    image = _upload(client, key, SAMPLES / "Canon_40D.jpg").json()
    catalog.work.finish([image["id"]], [])  # as if processed
    queued = client.post(f"/images/{image['id']}/reprocess", headers={"X-API-Key": key})
    assert queued.status_code == 202 and queued.json()["status"] == "requeued"
    listed = client.get("/images", params={"status": "requeued"}, headers={"X-API-Key": key}).json()
    assert [i["id"] for i in listed["items"]] == [image["id"]]
    assert catalog.work.ids_with_status("requeued") == [image["id"]]


@pytest.mark.slow
def test_erasure_leaves_nothing_of_the_image_in_any_store(api):
    client, app, settings = api
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("gdpr", scopes=["images:read", "images:write",
                                                                      "images:delete"]).id)
    headers = {"X-API-Key": key}
    doomed_path, kept_path = SAMPLES / "Canon_40D.jpg", SAMPLES / "Nikon_D70.jpg"
    doomed = _upload(client, key, doomed_path, "holiday-secret.jpg").json()
    kept = _upload(client, key, kept_path).json()
    page = _upload(client, key, SAMPLES / "phototest.tif", "diary-page.tif").json()  # erased too: its words
    instance = get_instance(settings)
    process_images([doomed["id"], kept["id"], page["id"]], settings=settings, instance=instance)
    assert "jumped" in client.get(f"/images/{page['id']}/ocr", headers=headers).json()["text"]
    assert client.post(f"/images/{doomed['id']}/feedback", json={"correct": True}, headers=headers).status_code == 201
    link = client.get(f"/images/{doomed['id']}/download-url", headers=headers).json()["url"]
    import dagster as dg

    from imago_pipeline.definitions import build_definitions  # the monitoring snapshot puts feedback in the lake
    defs = build_definitions(settings)
    assert dg.materialize([defs.get_assets_def("classifier_monitoring")], instance=instance,
                          resources=defs.resources).success
    lake = settings.lake_root
    before = duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake}/*/**/*.parquet', union_by_name=true, "
                        f"hive_partitioning=true) WHERE image_id = {doomed['id']}").fetchone()[0]
    assert before >= 7  # images, exif, thumbnail, ocr, vision, classification, feedback

    erased = client.delete(f"/images/{doomed['id']}", headers=headers)
    assert erased.status_code == 204

    identifiers = {str(doomed["id"]), doomed["sha256"], "holiday-secret"}
    # The API
    for path in (f"/images/{doomed['id']}", f"/images/{doomed['id']}/exif"):
        assert client.get(path, headers=headers).status_code == 404
    assert client.get(httpx.URL(link).path).status_code == 404
    assert client.delete(f"/images/{doomed['id']}", headers=headers).status_code == 404
    # The catalog: no row of any table mentions the image (by id in an image_id column, or sha or name anywhere)
    engine = catalog.engine
    with engine.connect() as connection:
        for table in sa_inspect(engine).get_table_names():
            columns = [c["name"] for c in sa_inspect(engine).get_columns(table)]
            rows = [dict(zip(columns, r)) for r in connection.execute(text(f'SELECT * FROM "{table}"'))]
            for row in rows:
                assert row.get("image_id") != doomed["id"], table
                if table == "images":
                    assert row["id"] != doomed["id"]
                assert doomed["sha256"] not in repr(row) and "holiday-secret" not in repr(row), table
        if engine.dialect.name == "sqlite":
            assert connection.execute(text("SELECT count(*) FROM image_search WHERE rowid = :i"),
                                      {"i": doomed["id"]}).scalar() == 0
        else:
            assert connection.execute(text("SELECT count(*) FROM image_search WHERE image_id = :i"),
                                      {"i": doomed["id"]}).scalar() == 0
        audit = connection.execute(text("SELECT action, detail FROM audit_log")).all()
    assert [a[0] for a in audit] == ["erase_image"] and doomed["sha256"] not in repr(audit)
    # The blob store: neither the original's bytes nor its thumbnail anywhere
    original = doomed_path.read_bytes()
    for path in settings.blob_root.rglob("*"):
        if path.is_file():
            assert path.read_bytes() != original and doomed["sha256"] not in str(path)
            assert path.name != f"{doomed['id']}.jpg"
    # The lake: no row with its id in any table, no file name or hash in any file
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake}/*/**/*.parquet', union_by_name=true, "
                      f"hive_partitioning=true) WHERE image_id = {doomed['id']}").fetchone()[0] == 0
    for path in lake.rglob("*.parquet"):
        assert doomed["sha256"].encode() not in path.read_bytes()
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake}/images/**/*.parquet') "
                      f"WHERE image_id = {kept['id']}").fetchone()[0] >= 1
    # Dagster: the partition and every event recorded for it
    assert str(doomed["id"]) not in instance.get_dynamic_partitions("images")
    assert str(kept["id"]) in instance.get_dynamic_partitions("images")
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as events
    from sqlalchemy import select

    with instance.event_log_storage.index_connection() as connection:
        left = connection.execute(select(events.c.id).where(events.c.partition == str(doomed["id"]))).all()
        kept_events = connection.execute(select(events.c.id).where(events.c.partition == str(kept["id"]))).all()
        bodies = [r[0] for r in connection.execute(select(events.c.event))]
    assert left == [] and kept_events
    assert not any(doomed["sha256"] in body or "holiday-secret" in body for body in bodies)
    # The other image is whole
    assert client.get(f"/images/{kept['id']}", headers=headers).json()["status"] == "done"

    # Every file under the home, the SQLite write-ahead logs included: no hash, name, camera make or word
    root = settings.resolved_home.parent  # the home, and the test's SQLite catalog file beside it

    def traces_under_home(*traces: bytes) -> set[tuple[bytes, str]]:
        return {(trace, str(path.relative_to(root))) for path in root.rglob("*") if path.is_file()
                for trace in traces if trace in path.read_bytes()}

    if settings.catalog_url.startswith("sqlite"):
        page_traces = (page["sha256"].encode(), b"diary-page", b"jumped")
        assert {trace for trace, _ in traces_under_home(*page_traces)} == set(page_traces)  # there before
        assert client.delete(f"/images/{page['id']}", headers=headers).status_code == 204
        assert not traces_under_home(doomed["sha256"].encode(), b"holiday-secret", b"Canon", *page_traces)
    del identifiers


def test_health_detailed_checks_every_dependency(api):
    client, _, _ = api
    refused = client.get("/health/detailed")
    assert refused.status_code == 401
    response = _admin(client, "GET", "/health/detailed")
    body = response.json()
    assert set(body["checks"]) == {"catalog", "dagster", "blob_store", "tesseract", "production_model"}
    for name, check in body["checks"].items():
        assert check["latency_ms"] >= 0 and check["detail"], name
    assert body["checks"]["catalog"]["status"] == "ok"
    assert body["checks"]["blob_store"]["status"] == "ok"
    assert body["checks"]["tesseract"]["status"] == "ok" and "eng+fra" in body["checks"]["tesseract"]["detail"]
    assert body["checks"]["production_model"]["status"] == "ok"
    assert body["checks"]["production_model"]["detail"].startswith("v1-")
    # no daemon runs in this test: uploads would wait, and the check says so
    assert body["checks"]["dagster"]["status"] == "degraded" and "sensor daemon" in body["checks"]["dagster"]["detail"]
    assert body["status"] == "degraded" and response.status_code == 200


def test_metrics_count_requests_uploads_and_pipeline_stages(api):
    client, app, settings = api
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("m").id)
    image = _upload(client, key, SAMPLES / "Canon_40D.jpg").json()
    _upload(client, key, SAMPLES / "Canon_40D.jpg")
    client.post("/images", headers={"X-API-Key": key}, files={"file": ("x.jpg", b"nope", "image/jpeg")})
    process_images([image["id"]], settings=settings, instance=get_instance(settings))
    client.get(f"/images/{image['id']}", headers={"X-API-Key": key})
    text_ = client.get("/metrics").text
    size = (SAMPLES / "Canon_40D.jpg").stat().st_size
    assert 'imago_http_requests_total{method="POST",route="/images",status="201"} 1.0' in text_
    assert 'imago_http_requests_total{method="GET",route="/images/{image_id}",status="200"} 1.0' in text_
    assert 'imago_uploads_total{outcome="accepted"} 1.0' in text_
    assert 'imago_uploads_total{outcome="duplicate"} 1.0' in text_
    assert 'imago_uploads_total{outcome="unsupported_type"} 1.0' in text_
    assert f"imago_upload_bytes_total {float(size)}" in text_
    assert 'imago_http_request_duration_seconds_count{method="POST",route="/images"} 3.0' in text_
    for stage in ("exif", "thumbnail", "ocr", "vision", "classification"):
        assert f'imago_pipeline_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text_
        assert f'imago_pipeline_stage_results_total{{stage="{stage}",status="done"}} 1.0' in text_


def test_logs_are_json_with_a_request_id_and_no_secrets(api):
    client, app, _ = api
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("logs").id)
    handler = next(h for h in logging.getLogger("imago").handlers if getattr(h, "_imago", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        uploaded = _upload(client, key, SAMPLES / "Canon_40D.jpg", "private-name.jpg")
        searched = client.get("/images", params={"q": "confidential words"},
                              headers={"X-API-Key": key, "X-Request-ID": "trace-abc-123456"})
        client.get("/images", headers={"X-API-Key": "imk_wrong-key-value"})
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert searched.headers["X-Request-ID"] == "trace-abc-123456"
    assert [line["request_id"] for line in lines] == [uploaded.headers["X-Request-ID"], "trace-abc-123456",
                                                      lines[2]["request_id"]]
    assert lines[0] | {"time": None, "duration_ms": None, "request_id": None} == {
        "time": None, "level": "INFO", "logger": "imago.api", "message": lines[0]["message"], "method": "POST",
        "route": "/images", "status": 201, "duration_ms": None, "client_id": lines[0]["client_id"],
        "request_id": None}
    assert lines[0]["message"].startswith("POST /images 201 ")
    assert lines[2]["status"] == 401 and lines[2]["client_id"] is None
    everything = stream.getvalue()
    for secret in (key, "imk_wrong-key-value", "private-name", "confidential"):
        assert secret not in everything


def test_development_logs_are_a_coloured_console_and_json_comes_back(api):
    """IMAGO_LOG_FORMAT=console (`imago serve`'s default): readable coloured lines with the request id."""
    from rich.console import Console

    from imago_api.observability import configure_logging

    client, app, _ = api
    key = app.state.catalog.clients.issue_key(app.state.catalog.clients.create("console").id)
    configure_logging("console")
    try:
        handler = next(h for h in logging.getLogger("imago").handlers if getattr(h, "_imago", False))
        screen = io.StringIO()
        handler.console = Console(file=screen, force_terminal=True, color_system="standard", width=200)
        client.get("/images", headers={"X-API-Key": key, "X-Request-ID": "console-trace-1234"})
        deadline = time.monotonic() + 10  # the access line is written once the answer is sent: after we have it
        while "console-trace-1234" not in screen.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        configure_logging("json")
    shown = screen.getvalue()
    assert "\x1b[" in shown  # coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "INFO" in plain and "imago.api [console-trace-1234] GET /images 200" in plain
    assert key not in shown
    handlers = [h for h in logging.getLogger("imago").handlers if getattr(h, "_imago", False)]
    assert len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler  # back to JSON lines
