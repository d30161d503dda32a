"""The original Imago service's contract (`../shared/SEED-API.md`, recorded in docs/api.md), walked route by
route over real HTTP with the field names its clients read: every route answers, with its scope, the fields
listed, and the shapes (`f/2.2`, `1/40`, `4.15mm`, ISO 8601, confidences 0 to 1). The images are really
processed (every stage, in process) so the nested objects hold what the pipeline found."""

from __future__ import annotations

import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import SecretStr

from imago_api.main import create_app
from imago_pipeline.core.config import Plan
from imago_pipeline.in_process import process_images
from tests.conftest import SAMPLES
from tests.http_server import serve

ADMIN_KEY = "operator-key-for-the-seed-contract"
PHOTO = SAMPLES / "iphone_hdr_YES.jpg"  # an iPhone 6 in Madrid: camera settings, GPS
PAGE = SAMPLES / "phototest.tif"  # a scanned English page: text
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# Every route of the seed table: (method, path, scope it needs; "" any key, None no key)
SEED_ROUTES = [
    ("POST", "/images/upload", "images:write"), ("GET", "/images", "images:read"),
    ("GET", "/images/{id}", "images:read"), ("GET", "/images/{id}/status", "images:read"),
    ("GET", "/images/{id}/exif", "images:read"), ("GET", "/images/{id}/ocr", "images:read"),
    ("GET", "/images/{id}/ai", "images:read"), ("GET", "/images/{id}/download-url", "images:read"),
    ("GET", "/images/{id}/thumbnail-url", "images:read"), ("GET", "/images/tags/all", "images:read"),
    ("POST", "/images/{id}/reprocess", "images:write"), ("DELETE", "/images/{id}", "images:delete"),
    ("POST", "/ai/summarize", "ai:use"), ("POST", "/ai/draft-task", "ai:use"),
    ("POST", "/auth/clients", "admin"), ("GET", "/auth/clients", "admin"), ("GET", "/auth/clients/{cid}", "admin"),
    ("PATCH", "/auth/clients/{cid}", "admin"), ("DELETE", "/auth/clients/{cid}", "admin"),
    ("POST", "/auth/clients/{cid}/rotate-key", "admin"),
    ("GET", "/health", None), ("GET", "/health/detailed", ""), ("GET", "/metrics", None), ("GET", "/docs", None),
]
ARTICLE = (b"<html><head><title>Bees</title></head><body><article><p>Honeybees make honey from the nectar of "
           b"flowers. They store it in wax cells inside the hive. A colony can hold fifty thousand bees in "
           b"summer.</p></article></body></html>")


@pytest.fixture
def pages():
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(ARTICLE)))
            self.end_headers()
            self.wfile.write(ARTICLE)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def seed(settings, dagster_instance):
    settings = settings.model_copy(update={"admin_api_key": SecretStr(ADMIN_KEY), "ai_fetch_allow_private": True,
                                           "plans": {**settings.plans, "free": Plan(rate_limit="1000/minute",
                                                                                    quota_bytes=None)}})
    app = create_app(settings)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        yield http, settings, dagster_instance


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_the_original_clients_routes_and_fields_work_as_recorded(seed, pages):
    http, settings, instance = seed
    admin = {"X-API-Key": ADMIN_KEY}

    # Clients: create (the key shown once), list, one, change plan and scopes, rotate, soft delete
    created = http.post("/auth/clients", headers=admin, json={
        "name": "shaarli-theme", "scopes": ["images:read", "images:write", "images:delete", "ai:use"]})
    assert created.status_code == 201, created.text
    client_id, key = created.json()["id"], created.json()["api_key"]
    me = {"X-API-Key": key}
    assert any(c["id"] == client_id for c in http.get("/auth/clients", headers=admin).json())
    assert http.get(f"/auth/clients/{client_id}", headers=admin).json()["name"] == "shaarli-theme"
    patched = http.patch(f"/auth/clients/{client_id}", headers=admin, json={"plan": "pro"})
    assert patched.status_code == 200 and patched.json()["plan"] == "pro"
    rotated = http.post(f"/auth/clients/{client_id}/rotate-key", headers=admin)
    assert rotated.status_code in (200, 201) and rotated.json()["api_key"] != key
    assert http.get("/images", headers=me).status_code == 401  # the old key stopped working
    me = {"X-API-Key": rotated.json()["api_key"]}

    # Upload: id, uuid, original_name, status pending, a sentence saying processing has started
    uploads = {}
    for path, media_type in ((PHOTO, "image/jpeg"), (PAGE, "image/tiff")):
        answer = http.post("/images/upload", headers=me, files={"file": (path.name, path.read_bytes(), media_type)})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert isinstance(body["id"], int) and UUID.match(body["uuid"])
        assert body["original_name"] == path.name and body["status"] == "pending"
        assert "processing has started" in body["message"]
        uploads[path] = body
    photo, page = uploads[PHOTO], uploads[PAGE]
    process_images([photo["id"], page["id"]], settings=settings, instance=instance)

    # List, with quota information
    listed = http.get("/images", headers=me).json()
    assert {i["uuid"] for i in listed["items"]} == {photo["uuid"], page["uuid"]} and listed["total"] == 2
    assert listed["usage"]["images"] == 2 and "quota_bytes" in listed["usage"]

    # Detail, by id and by uuid: the same answer
    detail = http.get(f"/images/{photo['id']}", headers=me).json()
    assert http.get(f"/images/{photo['uuid']}", headers=me).json() == detail
    assert detail["id"] == photo["id"] and detail["original_name"] == PHOTO.name
    assert detail["processing_status"] == "done"
    camera, gps = detail["exif"]["camera"], detail["exif"]["gps"]
    assert camera == {"make": "Apple", "model": "iPhone 6", "iso": 32, "aperture": "f/2.2", "shutter_speed": "1/40",
                      "focal_length": "4.2mm", "taken_at": "2015-04-10T20:12:23+02:00"}  # local time, Madrid's zone
    assert gps["latitude"] == pytest.approx(40.44697222) and gps["longitude"] == pytest.approx(-3.72475278)
    assert gps["has_gps"] is True
    assert gps["maps_url"] == ("https://www.openstreetmap.org/?mlat=40.446972&mlon=-3.724753"
                               "#map=16/40.446972/-3.724753")
    assert gps["place"] == {"city": "Moncloa-Aravaca", "admin1": "Madrid", "country_code": "ES",
                            "country": "Spain", "timezone": "Europe/Madrid"}
    ai = detail["ai"]
    assert ai["description"] and all(isinstance(t, str) for t in ai["tags"]) and ai["model_used"]
    assert 0 <= ai["confidence"] <= 1

    text = http.get(f"/images/{page['uuid']}", headers=me).json()
    assert text["exif"]["gps"] == {"latitude": None, "longitude": None, "altitude": None, "has_gps": False,
                                   "maps_url": None, "place": None}
    ocr = text["ocr"]
    assert ocr["has_text"] is True and "quick brown dog" in ocr["text"] and ocr["language"] == "en"
    assert 0.5 <= ocr["confidence"] <= 1 and all(0 <= w["confidence"] <= 1 for w in ocr["words"])

    # Status: started_at and done_at, in order
    status = http.get(f"/images/{photo['id']}/status", headers=me).json()
    assert status["id"] == photo["id"] and status["status"] == "done"
    assert _iso(status["started_at"]) <= _iso(status["done_at"])

    # The parts alone: the same objects as in the detail
    assert http.get(f"/images/{photo['id']}/exif", headers=me).json() == detail["exif"]
    assert http.get(f"/images/{page['id']}/ocr", headers=me).json() == ocr
    assert http.get(f"/images/{photo['uuid']}/ai", headers=me).json() == ai

    # Signed URLs, downloaded without a key
    for route in ("download-url", "thumbnail-url"):
        url = http.get(f"/images/{photo['id']}/{route}", headers=me).json()["url"]
        assert "/files/signed/" in url
        fetched = httpx.get(url, timeout=30)
        assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("image/")
    assert httpx.get(url, timeout=30).content[:3] == b"\xff\xd8\xff"  # the thumbnail is a JPEG

    tags = http.get("/images/tags/all", headers=me).json()
    assert tags and {"tag", "count"} <= set(tags[0])

    # Search by place: the country filter and the words of the place
    assert [i["id"] for i in http.get("/images", headers=me, params={"country": "es"}).json()["items"]] == [photo["id"]]
    assert [i["id"] for i in http.get("/images", headers=me, params={"q": "madrid"}).json()["items"]] == [photo["id"]]
    assert [i["id"] for i in http.get("/images", headers=me, params={"q": "spain"}).json()["items"]] == [photo["id"]]
    assert http.get("/images", headers=me, params={"country": "FR"}).json()["items"] == []

    # AI utilities with the original bodies
    summary = http.post("/ai/summarize", headers=me, json={"url": f"{pages}/bees", "language": "en"})
    assert summary.status_code == 200, summary.text
    assert "Honeybees" in summary.json()["summary"]
    task = http.post("/ai/draft-task", headers=me,
                     json={"description": "Send the quarterly report to Anna by Friday", "context": "finance"})
    assert task.status_code == 200, task.text
    assert task.json()["title"]

    # Isolation: another client sees none of it, by id or by uuid
    other = http.post("/auth/clients", headers=admin, json={"name": "other-app", "scopes": ["images:read",
                                                                                          "images:delete"]})
    theirs = {"X-API-Key": other.json()["api_key"]}
    for ref in (photo["id"], photo["uuid"]):
        assert http.get(f"/images/{ref}", headers=theirs).status_code == 404
        assert http.delete(f"/images/{ref}", headers=theirs).status_code == 404

    # Reprocess, then delete by uuid
    again = http.post(f"/images/{photo['uuid']}/reprocess", headers=me)
    assert again.status_code == 202 and again.json()["status"] == "requeued"
    assert http.delete(f"/images/{photo['uuid']}", headers=me).status_code == 204
    assert http.get(f"/images/{photo['id']}", headers=me).status_code == 404
    assert http.get(f"/images/{photo['uuid']}", headers=me).status_code == 404

    # Operations: without a key, and the detailed health with any client's key
    for path in ("/health", "/metrics", "/docs"):
        assert http.get(path).status_code == 200, path
    assert http.get("/health/detailed").status_code == 401
    health = http.get("/health/detailed", headers=me)
    assert health.status_code in (200, 503) and health.json()["checks"]["catalog"]["status"] == "ok"

    # Every authenticated route: no key is 401, a key without the route's scope is 403, in the error shape
    readers = http.post("/auth/clients", headers=admin, json={"name": "no-scopes", "scopes": []}).json()
    no_scope = {"X-API-Key": readers["api_key"]}
    for method, path, scope in SEED_ROUTES:
        if not scope:  # public, or any key
            continue
        url = path.format(id=page["id"], cid=client_id)
        assert http.request(method, url).status_code == 401, (method, path)
        refused = http.request(method, url, headers=no_scope)
        assert refused.status_code == 403, (method, path, refused.status_code)
        assert refused.json()["error"]["code"] in ("missing_scope", "forbidden"), refused.json()

    assert http.delete(f"/auth/clients/{client_id}", headers=admin).status_code in (200, 204)
    assert http.get("/images", headers=me).status_code == 401  # a deleted client's keys stop working
