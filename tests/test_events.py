"""`GET /images/{id}/events` over real HTTP: the image's stage and status changes pushed as Server-Sent Events,
written by the catalog's real writers (what a run's stages call), on each transport: a timer on SQLite,
LISTEN/NOTIFY on Postgres (with the timer's safety net made too slow to matter, so only a notification can
deliver in time), including a listener whose connection the database kills."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from imago_api.main import create_app
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.results import StageOutcome
from imago_pipeline.core.enrichment.batch import STAGES
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from tests.conftest import REPO, SAMPLES
from tests.http_server import free_port, serve, wait_for_http

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def api(settings):
    # On Postgres the timer only runs every 30 s × 20: events within a second can only come from NOTIFY.
    poll = 30.0 if settings.catalog_url.startswith("postgresql") else 0.25
    settings = settings.model_copy(update={"events_poll_s": poll, "events_heartbeat_s": 0.5})
    app = create_app(settings)
    catalog = app.state.catalog
    client = catalog.clients.create("watcher", scopes=["images:read", "images:write", "images:delete"])
    other = catalog.clients.create("other")
    reader = catalog.clients.create("writer-only", scopes=["images:write"])
    keys = {name: catalog.clients.issue_key(c.id) for name, c in
            (("watcher", client), ("other", other), ("writer-only", reader))}
    image = register_image(catalog, LocalBlobStore(settings.blob_root), settings, tenant_id=client.id,
                           filename="Canon_40D.jpg", data=(SAMPLES / "Canon_40D.jpg").read_bytes()).image
    with serve(app) as base_url:
        yield base_url, keys, catalog, image, app


class EventReader:
    """Reads an SSE stream in a thread; events (and comments) arrive in a queue with their arrival time."""

    def __init__(self, url: str, key: str):
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.content_type = ""
        self._thread = threading.Thread(target=self._read, args=(url, key), daemon=True)
        self._thread.start()

    def _read(self, url: str, key: str) -> None:
        try:
            with httpx.stream("GET", url, headers={"X-API-Key": key}, timeout=60) as response:
                self.status, self.content_type = response.status_code, response.headers.get("content-type", "")
                event = None
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.events.put(("comment", line, time.time()))
                    elif line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        self.events.put((event, json.loads(line[5:]), time.time()))
        except httpx.HTTPError as error:  # cut, not ended (a stream still open when the test's server stops)
            self.events.put(("broken", f"{type(error).__name__}: {error}", time.time()))
            return
        self.events.put(("closed", None, time.time()))

    def next(self, kind: str | None = None, timeout: float = 10):
        deadline = time.time() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.time()))
            if kind is None or event[0] == kind:
                return event

    def until(self, kind: str, timeout: float = 10) -> list:
        seen = []
        while True:
            event = self.next(timeout=timeout)
            seen.append(event)
            if event[0] == kind:
                return seen


def _stage_done(catalog, image, stage: str, status: str = "done", error: str | None = None) -> float:
    catalog.results.save_stage(stage, [StageOutcome(image.id, image.tenant_id, status, error, 5.0)])
    return time.time()


def test_the_stream_pushes_each_stage_and_ends_when_the_image_is_done(api, settings):
    base_url, keys, catalog, image, app = api
    reader = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    first = reader.next("status")
    assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
    assert first[1] == {"id": image.id, "status": "pending", "error": None, "stages": {}}

    catalog.work.take(10, "run:test")  # the upload sensor takes it into work
    assert reader.next("status")[1]["status"] == "queued"
    delays = []
    for stage in STAGES:
        written = _stage_done(catalog, image, stage)
        event = reader.next("stage")
        assert event[1] == {"id": image.id, "stage": stage, "status": "done", "error": None}
        delays.append(event[2] - written)
    catalog.work.finish([image.id], STAGES, claim="run:test")
    status = reader.next("status")[1]
    assert status["status"] == "done" and status["stages"] == dict.fromkeys(STAGES, "done")
    assert reader.next("end")[1] == {"id": image.id, "status": "done", "error": None}
    assert reader.next()[0] == "closed"  # the server closed the stream
    assert app.state.progress_feed.transport == ("postgres-notify" if "postgres" in settings.catalog_url else "timer")
    # pushed, not found by the next slow read: well under the 600 s safety net on Postgres, 0.25 s timer on SQLite
    assert max(delays) < 2.0, delays


def test_a_failed_stage_and_image_are_reported_with_their_reasons(api):
    base_url, keys, catalog, image, _app = api
    reader = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    reader.next("status")
    catalog.work.take(10, "run:test")
    for stage in STAGES:
        _stage_done(catalog, image, stage, *(("failed", "ocr: tesseract crashed") if stage == "ocr" else ("done",)))
    catalog.work.finish([image.id], STAGES, claim="run:test")
    events = reader.until("end")
    ocr = [e[1] for e in events if e[0] == "stage" and e[1]["stage"] == "ocr"]
    assert ocr == [{"id": image.id, "stage": "ocr", "status": "failed", "error": "ocr: tesseract crashed"}]
    assert events[-1][1]["status"] == "failed" and "tesseract crashed" in events[-1][1]["error"]


def test_an_idle_stream_gets_heartbeats_and_a_finished_image_ends_at_once(api):
    base_url, keys, catalog, image, _app = api
    reader = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    reader.next("status")
    assert reader.next("comment", timeout=5)[1] == ": keep-alive"
    catalog.work.take(10, "run:test")
    for stage in STAGES:
        _stage_done(catalog, image, stage)
    catalog.work.finish([image.id], STAGES, claim="run:test")
    reader.until("end")
    # a new stream on a finished image: its state, then the end, at once
    again = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    kinds = [e[0] for e in again.until("closed", timeout=5)]
    assert kinds == ["stage"] * len(STAGES) + ["status", "end", "closed"]


def test_the_stream_is_tenant_scoped_needs_images_read_and_ends_when_the_image_is_erased(api):
    base_url, keys, _catalog, image, _app = api
    url = f"{base_url}/images/{image.id}/events"
    other = httpx.get(url, headers={"X-API-Key": keys["other"]})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    no_scope = httpx.get(url, headers={"X-API-Key": keys["writer-only"]})
    assert no_scope.status_code == 403 and "images:read" in no_scope.json()["error"]["message"]
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"{base_url}/images/9223372036854775808/events",
                     headers={"X-API-Key": keys["watcher"]}).status_code in (404, 422)

    reader = EventReader(url, keys["watcher"])
    reader.next("status")
    deleted = httpx.delete(f"{base_url}/images/{image.id}", headers={"X-API-Key": keys["watcher"]})
    assert deleted.status_code == 204
    assert reader.next("end", timeout=10)[1] == {"id": image.id, "status": "erased", "error": None}


def test_on_postgres_the_listener_recovers_when_the_database_drops_its_connection(api, settings):
    if not settings.catalog_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is the Postgres transport")
    base_url, keys, catalog, image, app = api
    reader = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    reader.next("status")
    feed = app.state.progress_feed
    before = _listeners(settings, wait=True)
    admin = create_engine(settings.catalog_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:  # what a database restart or a proxy timeout does to the listener
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": before[0]})
    admin.dispose()
    deadline = time.time() + 20
    while time.time() < deadline and (_listeners(settings) in ([], before) or not feed.listening):
        time.sleep(0.1)
    after = _listeners(settings)
    assert len(after) == 1 and after != before and feed.listening  # listening again, on a new connection
    written = _stage_done(catalog, image, "exif")
    event = reader.next("stage", timeout=10)
    assert event[1]["stage"] == "exif" and event[2] - written < 2.0


def _listeners(settings, wait: bool = False) -> list[int]:
    """The server pids of this database's LISTEN connections (waiting for the first one when asked)."""
    engine = create_engine(settings.catalog_url)
    deadline = time.time() + 10
    try:
        while True:
            with engine.connect() as connection:
                pids = list(connection.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )).scalars())
            if pids or not wait or time.time() > deadline:
                return pids
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_following_a_reprocess_shows_each_stage_as_it_is_redone(api):
    base_url, keys, catalog, image, _app = api
    catalog.work.take(10, "run:first")
    for stage in STAGES:
        catalog.results.save_stage(stage, [StageOutcome(image.id, image.tenant_id, "done", None, 5.0)],
                                   run_id="run-first")
    catalog.work.finish([image.id], STAGES, claim="run:first")
    assert httpx.post(f"{base_url}/images/{image.id}/reprocess",
                      headers={"X-API-Key": keys["watcher"]}).status_code == 202
    reader = EventReader(f"{base_url}/images/{image.id}/events", keys["watcher"])
    opening = reader.until("status")  # the stages as the first run left them, then the status
    assert opening[-1][1]["status"] == "requeued" and [e[0] for e in opening[:-1]] == ["stage"] * len(STAGES)
    catalog.work.take(10, "run:again")
    assert reader.next("status")[1]["status"] == "queued"
    for stage in STAGES:  # redone "done", as before: each is still news
        catalog.results.save_stage(stage, [StageOutcome(image.id, image.tenant_id, "done", None, 5.0)],
                                   run_id="run-again")
        assert reader.next("stage")[1] == {"id": image.id, "stage": stage, "status": "done", "error": None}
    catalog.work.finish([image.id], STAGES, claim="run:again")
    assert reader.next("end")[1]["status"] == "done"


def test_a_stream_ends_when_its_key_is_revoked_or_its_client_disabled(api):
    base_url, keys, catalog, image, _app = api
    url = f"{base_url}/images/{image.id}/events"
    old = EventReader(url, keys["watcher"])
    old.next("status")
    new_key = catalog.clients.rotate_key(image.tenant_id)  # revokes the client's keys, issues one
    ended = old.next("end", timeout=10)[1]
    assert ended == {"id": image.id, "status": "key_revoked", "error": "the API key was revoked or its client disabled"}
    assert old.next()[0] == "closed"
    new = EventReader(url, new_key)
    new.next("status")
    assert new.next("comment", timeout=5)  # the new key streams on
    catalog.clients.disable(image.tenant_id)
    assert new.next("end", timeout=10)[1]["status"] == "key_revoked"


def test_stopping_the_api_ends_open_streams_cleanly_and_at_once(tmp_path, settings):
    """A real uvicorn process, as `imago serve` runs it, stopped with SIGTERM while a stream is open."""
    catalog = Catalog.connect(settings.catalog_url)
    client = catalog.clients.create("watcher")
    key = catalog.clients.issue_key(client.id)
    image = register_image(catalog, LocalBlobStore(settings.blob_root), settings, tenant_id=client.id,
                           filename="Canon_40D.jpg", data=(SAMPLES / "Canon_40D.jpg").read_bytes()).image
    port = free_port()
    env = {**os.environ, "IMAGO_HOME": str(settings.resolved_home), "IMAGO_DATABASE_URL": settings.catalog_url,
           "IMAGO_LOG_FORMAT": "text"}
    log = tmp_path / "api.log"
    with log.open("w") as out:
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "imago_api.main:create_app", "--factory", "--port",
                                str(port), "--timeout-graceful-shutdown", "3"], cwd=REPO, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 60)
        reader = EventReader(f"http://127.0.0.1:{port}/images/{image.id}/events", key)
        reader.next("status")
        stopped = time.time()
        api.send_signal(signal.SIGTERM)
        ending = reader.next(timeout=10)
        assert ending[0] == "closed", ending  # a complete response, not one cut short
        assert api.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has stopped
        assert time.time() - stopped < 2.5  # no grace period spent waiting for the stream
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(10)
    assert "Exception in ASGI application" not in log.read_text() and "Cancel" not in log.read_text()
