"""Bad input and broken dependencies never become a 500: out-of-range ids, absurd file names, a fuzzer over
every operation, the catalog refusing connections, the blob folder unwritable; and signed links that are
bound to what they were issued for. Over real HTTP."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from imago_api.main import create_app
from imago_pipeline.core.config import ImagoSettings, Plan
from tests.conftest import SAMPLES
from tests.http_server import free_port, serve

PHOTO = SAMPLES / "Canon_40D.jpg"
ADMIN_KEY = "operator-key-for-the-robustness-suite"
TOO_BIG = [2**31, 2**63, 9223372036854775808, 10**30]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("robust")
    settings = ImagoSettings(home=home / "imago", workers=1, admin_api_key=ADMIN_KEY, log_format="text",
                             plans={"free": Plan(rate_limit="100000/minute", quota_bytes=None)})
    app = create_app(settings)
    catalog = app.state.catalog
    client = catalog.clients.create("robust", scopes=["images:read", "images:write", "images:delete", "ai:use"])
    key = catalog.clients.issue_key(client.id)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60, headers={"X-API-Key": key}) as http:
        image = http.post("/images", files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")}).json()
        yield http, app, settings, key, image, base_url


@pytest.mark.parametrize("path", ["/images/{n}", "/images/{n}/status", "/images/{n}/exif", "/images/{n}/ocr",
                                  "/images/{n}/ai", "/images/{n}/download-url", "/images/{n}/thumbnail-url"])
@pytest.mark.parametrize("number", [*TOO_BIG, 0, -1])
def test_ids_out_of_range_are_refused_in_the_error_shape(api, path, number):
    http = api[0]
    answer = http.get(path.format(n=number))
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("number", TOO_BIG)
def test_writes_clients_and_offsets_out_of_range_are_refused_too(api, number):
    http = api[0]
    admin = {"X-API-Key": ADMIN_KEY}
    for method, path, kwargs in [("POST", f"/images/{number}/reprocess", {}), ("DELETE", f"/images/{number}", {}),
                                 ("POST", f"/images/{number}/feedback", {"json": {"correct": True}}),
                                 ("GET", f"/auth/clients/{number}", {"headers": admin}),
                                 ("PATCH", f"/auth/clients/{number}", {"headers": admin, "json": {"plan": "free"}}),
                                 ("GET", "/images", {"params": {"offset": number}})]:
        answer = http.request(method, path, **kwargs)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", (method, path)


def test_a_five_thousand_character_file_name_gets_the_error_shape(api):
    http = api[0]
    answer = http.post("/images", files={"file": ("x" * 5000 + ".jpg", PHOTO.read_bytes(), "image/jpeg")})
    assert 400 <= answer.status_code < 500
    assert set(answer.json()["error"]) >= {"code", "message"}


def test_unknown_routes_and_methods_answer_in_the_error_shape(api):
    http = api[0]
    assert http.get("/nowhere").json()["error"]["code"] == "not_found"
    wrong = http.put("/images")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_every_error_status_a_route_answers_is_declared_with_the_error_shape(api):
    spec = api[1].openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            declared = operation["responses"]
            scoped = "X-API-Key" in str(operation.get("security", "")) or path.startswith(("/images", "/auth",
                                                                                            "/ai", "/api"))
            if scoped:
                assert {"401", "403", "422", "429", "503"} <= set(declared), (method, path)
            for status, answer in declared.items():
                if status.startswith(("4", "5")) and path not in ("/health", "/health/detailed"):
                    schema = str(answer.get("content", {}).get("application/json", {}).get("schema"))
                    assert "ErrorOut" in schema or "HTTPValidationError" in schema, (method, path, status)


# --- a fuzzer over every operation (bounded: a few examples each, loopback only) ------------------------

FUZZ = ["--checks", "not_a_server_error,status_code_conformance", "--max-examples", "5",
        "--phases", "examples,coverage,fuzzing", "--generation-deterministic",
        "--no-color", "--workers", "1", "--request-timeout", "30"]


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory):
    """An API of its own: the fuzzer rotates keys and disables clients."""
    home = tmp_path_factory.mktemp("fuzz")
    settings = ImagoSettings(home=home / "imago", workers=1, admin_api_key=ADMIN_KEY, log_format="text",
                             plans={"free": Plan(rate_limit="100000/minute", quota_bytes=None)})
    app = create_app(settings)
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("fuzzed", scopes=["images:read", "images:write",
                                                                         "images:delete", "ai:use"]).id)
    with serve(app) as base_url:
        yield key, base_url


@pytest.mark.parametrize("who", ["client", "operator"])
def test_fuzzing_every_operation_finds_no_server_error_and_no_undeclared_status(fuzzed_api, tmp_path, who):
    """Schemathesis (boundary values, then generated valid and invalid requests) over every operation, with
    a key holding the scopes it needs: no answer is a 5xx and every status is declared for its operation."""
    key, base_url = fuzzed_api
    admin_paths = "^/(auth|health/detailed)"
    # The event stream of an image that never finishes (no pipeline runs here) stays open by design; its
    # validation, scopes and tenancy are tested in test_events.py and test_api_security.py.
    selection = (["-H", f"X-API-Key: {key}", "--exclude-path-regex", f"{admin_paths}|/events$"] if who == "client"
                 else ["-H", f"X-API-Key: {ADMIN_KEY}", "--include-path-regex", admin_paths])
    run = subprocess.run([str(Path(sys.executable).with_name("schemathesis")), "run", f"{base_url}/openapi.json",
                          *FUZZ, *selection], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    assert run.returncode == 0, run.stdout[-6000:]
    assert "generated" in summary and " passed" in summary


# --- outages ------------------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_with_the_catalog_refusing_connections_the_api_starts_and_answers_503(tmp_path):
    settings = ImagoSettings(home=tmp_path / "imago", admin_api_key=ADMIN_KEY, log_format="text",
                             database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{_closed_port()}/imago")
    app = create_app(settings)  # no traceback: the catalog is opened on first use
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        assert http.get("/health").status_code == 503
        for answer in (http.get("/images", headers={"X-API-Key": "imk_whatever-key"}),
                       http.post("/images", headers={"X-API-Key": "imk_whatever-key"},
                                 files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")})):
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "catalog_unavailable" and answer.headers["Retry-After"]
        detailed = http.get("/health/detailed", headers={"X-API-Key": ADMIN_KEY})
        assert detailed.status_code == 503 and "catalog" in detailed.json()["failed"]


def test_with_the_blob_folder_unwritable_uploads_answer_503_then_recover(api):
    http, _, settings, *_ = api
    blobs = settings.blob_root
    aside = blobs.with_name("blobs-aside")
    blobs.rename(aside)
    blobs.write_text("not a folder")  # nothing can be written under it
    try:
        answer = http.post("/images", files={"file": ("n.jpg", (SAMPLES / "Nikon_D70.jpg").read_bytes(),
                                                      "image/jpeg")})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "storage_unavailable"
        assert answer.headers["Retry-After"]
    finally:
        blobs.unlink()
        aside.rename(blobs)
    again = http.post("/images", files={"file": ("n.jpg", (SAMPLES / "Nikon_D70.jpg").read_bytes(), "image/jpeg")})
    assert again.status_code == 201


# --- signed links: bound to the image's content, the key that asked, and the public URL ----------------

def test_signed_links_die_with_their_key_or_client_and_never_serve_another_image(api, tmp_path):
    http, app, _settings, _key, _image, _ = api
    catalog = app.state.catalog
    other = catalog.clients.create("linker", scopes=["images:read", "images:write", "images:delete"])
    other_key = catalog.clients.issue_key(other.id)
    headers = {"X-API-Key": other_key}
    uploaded = http.post("/images", headers=headers,
                         files={"file": ("p.jpg", (SAMPLES / "PaintTool_sample.jpg").read_bytes(), "image/jpeg")})
    image_id = uploaded.json()["id"]
    link = httpx.URL(http.get(f"/images/{image_id}/download-url", headers=headers).json()["url"]).path
    assert http.get(link, headers={"X-API-Key": ""}).status_code == 200
    rotated = http.post(f"/auth/clients/{other.id}/rotate-key", headers={"X-API-Key": ADMIN_KEY}).json()["api_key"]
    revoked = http.get(link)
    assert revoked.status_code == 403 and revoked.json()["error"]["code"] == "link_revoked"
    headers = {"X-API-Key": rotated}
    link = httpx.URL(http.get(f"/images/{image_id}/download-url", headers=headers).json()["url"]).path
    assert http.get(link).status_code == 200
    # erased, then the same id can never name another image: the link finds nothing
    assert http.delete(f"/images/{image_id}", headers=headers).status_code == 204
    assert http.get(link).status_code == 404
    newer = http.post("/images", headers=headers,
                      files={"file": ("q.jpg", (SAMPLES / "PaintTool_sample.jpg").read_bytes(), "image/jpeg")})
    assert newer.json()["id"] > image_id
    assert http.get(link).status_code == 404
    # a disabled client's links stop working
    link = httpx.URL(http.get(f"/images/{newer.json()['id']}/download-url", headers=headers).json()["url"]).path
    assert http.delete(f"/auth/clients/{other.id}", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert http.get(link).json()["error"]["code"] == "link_revoked"


def test_links_are_built_from_the_public_url_not_the_host_header(api, tmp_path):
    http, app, settings, _key, image, _base_url = api
    forged = http.get(f"/images/{image['id']}/download-url", headers={"Host": "evil.example"}).json()["url"]
    assert forged.startswith("http://evil.example/")  # unset: the request's own address (documented)
    app.state.settings = settings.model_copy(update={"public_url": "https://images.example.com/"})
    try:
        url = http.get(f"/images/{image['id']}/download-url", headers={"Host": "evil.example"}).json()["url"]
    finally:
        app.state.settings = settings
    assert url.startswith("https://images.example.com/files/signed/")


def test_an_unexpected_error_answers_500_in_the_error_shape_with_the_request_id(tmp_path, caplog):
    """Our bug, not the client's: the body still has the error shape, and names the request id that the
    log line with the traceback carries (before: Starlette's plain-text 'Internal Server Error')."""
    app = create_app(ImagoSettings(home=tmp_path / "imago", workers=1, log_format="text"))

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    logger = logging.getLogger("imago.api")  # the `imago` logger has its own handler and does not propagate
    logger.addHandler(caplog.handler)
    try:
        with serve(app) as base_url:
            answer = httpx.get(f"{base_url}/boom", headers={"X-Request-ID": "request-for-the-bug"}, timeout=30)
    finally:
        logger.removeHandler(caplog.handler)
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "request-for-the-bug"
    assert answer.json()["error"]["code"] == "internal_error"
    assert answer.json()["error"]["request_id"] == "request-for-the-bug"
    logged = [r for r in caplog.records if r.name == "imago.api" and r.exc_info]
    assert logged and "a bug" in str(logged[-1].exc_info[1])


def test_times_past_the_calendar_in_utc_big_quotas_and_bad_host_names_are_refused_not_500(api):
    """Each of these answered 500 (OverflowError, IDNAError) before."""
    http, _app, _settings, _key, _image, _url = api
    for params in ({"created_from": "0001-01-01T00:00:00+01:00"}, {"created_to": "9999-12-31T23:59:59-14:00"}):
        answer = http.get("/images", params=params)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", params
    assert http.get("/images", params={"created_to": "9999-12-31T23:59:59+00:00"}).status_code == 200
    admin = {"X-API-Key": ADMIN_KEY}
    for method, path in [("POST", "/auth/clients"), ("PATCH", "/auth/clients/1")]:
        body = {"quota_bytes": 2**63, **({"name": "big-quota"} if method == "POST" else {})}
        answer = http.request(method, path, headers=admin, json=body)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", method
    for url in ["http://a..b/", "http://xn--/", f"http://{'a' * 64}.example/"]:
        answer = http.post("/ai/summarize", json={"url": url})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "url_not_allowed", url
    far = http.post("/ai/draft-task", json={"description": "Send the report in 99999999999 days"})
    assert far.status_code == 200 and far.json()["due_date"] is None
    last_day = http.post("/ai/draft-task", json={"description": "Call Ana tomorrow", "today": "9999-12-31"})
    assert last_day.status_code == 200 and last_day.json()["due_date"] is None
    everything = http.get("/images").json()["total"]
    assert http.get("/images", params={"q": "   "}).json()["total"] == everything  # blank: no search


def test_text_with_a_nul_character_is_refused_on_postgres(tmp_path, postgres_admin_url):
    """Postgres refuses NUL in any string: psycopg2's ValueError was a 500."""
    from tests import postgres

    name = f"imago_nul_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(postgres_admin_url, name)
    try:
        app = create_app(ImagoSettings(home=tmp_path / "imago", workers=1, log_format="text", database_url=url))
        client = app.state.catalog.clients.create("nul", scopes=["images:read"])
        key = app.state.catalog.clients.issue_key(client.id)
        with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as http:
            for params in ({"camera_make": "\x00"}, {"camera_make": "a\x00b"}):
                answer = http.get("/images", params=params)
                assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", params
            assert http.get("/images", params={"camera_make": "Canon"}).status_code == 200
            assert http.get("/images", params={"q": "cat\x00"}).status_code == 200  # search words drop it
        app.state.catalog.engine.dispose()
    finally:
        postgres.drop_database(postgres_admin_url, name)


@contextlib.contextmanager
def _redis_server(port: int):
    """A throwaway Redis (no persistence) on `port`, stopped on exit."""
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait(10)


def test_rate_limits_in_redis_are_shared_across_api_processes_and_its_outage_is_a_503(tmp_path):
    """IMAGO_RATE_LIMIT_STORAGE=redis://…: two API processes (apps) count one client's requests together;
    Redis down answers 503 rate_limit_unavailable (the redis client was not installed: the API did not
    start), and the API recovers by itself when Redis is back."""
    port = free_port()
    settings = ImagoSettings(home=tmp_path / "imago", workers=1, log_format="text",
                             rate_limit_storage=f"redis://127.0.0.1:{port}/0",
                             plans={"free": Plan(rate_limit="3/minute", quota_bytes=None)})
    with _redis_server(port):
        first, second = create_app(settings), create_app(settings)
        client = first.state.catalog.clients.create("shared", scopes=["images:read"])
        key = first.state.catalog.clients.issue_key(client.id)
        with serve(first) as one, serve(second) as two:
            answers = [httpx.get(f"{base}/images", headers={"X-API-Key": key}, timeout=30)
                       for base in (one, two, one, two)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            assert [a.headers.get("x-ratelimit-remaining") for a in answers[:3]] == ["2", "1", "0"]
    with serve(first) as one:
        down = httpx.get(f"{one}/images", headers={"X-API-Key": key}, timeout=30)
        assert down.status_code == 503 and down.json()["error"]["code"] == "rate_limit_unavailable"
        assert down.headers["retry-after"]
        with _redis_server(port):  # back (empty: the counters start again)
            assert httpx.get(f"{one}/images", headers={"X-API-Key": key}, timeout=30).status_code == 200


def test_an_unreadable_production_model_answers_503_model_unavailable_not_500(api):
    from imago_pipeline.core import model_store
    from training.registry import open_model_store

    http, app, settings, *_ = api
    registry = open_model_store(app.state.catalog, app.state.blobs, settings.models_dir)
    key = registry.production().artifact_key
    artifact = app.state.blobs.get(key)
    app.state.blobs.delete(key)
    model_store._heads.clear()  # read once per process: as in a process starting after the file went
    try:
        answer = http.post("/api/predict", files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable"
        assert answer.headers["Retry-After"]
    finally:
        app.state.blobs.put(key, artifact)
        model_store._heads.clear()
    assert http.post("/api/predict", files={"file": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")}).status_code == 200


@pytest.mark.parametrize("path", ["/images", "/images/upload", "/api/predict"])
def test_a_form_with_two_files_is_refused_not_half_taken(api, path):
    http, app, *_ = api
    other = SAMPLES / "Nikon_D70.jpg"

    def images() -> int:
        with app.state.catalog.begin() as connection:
            return connection.execute(text("select count(*) from images")).scalar_one()

    before = images()
    answer = http.post(path, files=[("file", ("a.jpg", PHOTO.read_bytes(), "image/jpeg")),
                                    ("file", ("b.jpg", other.read_bytes(), "image/jpeg"))])
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "too_many_files"
    assert "2 parts" in answer.json()["error"]["message"]
    assert images() == before
    single = http.post(path, files={"file": ("b.jpg", other.read_bytes(), "image/jpeg")})
    assert single.status_code in (200, 201)
