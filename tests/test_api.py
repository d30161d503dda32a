"""The API over real HTTP against the real catalog databases (SQLite and Postgres)."""

from __future__ import annotations

import httpx
import pytest

from imago_api.main import create_app
from imago_pipeline.in_process import process_images
from tests.conftest import SAMPLES, shared
from tests.http_server import serve


@pytest.fixture
def api(settings):
    app = create_app(settings)
    with serve(app) as base_url:
        catalog = app.state.catalog
        keys = {}
        for name in ("alice", "bob"):
            tenant = catalog.clients.get_or_create(name)
            keys[name] = catalog.clients.issue_key(tenant.id, ["images:read", "images:write"])
        keys["reader"] = catalog.clients.issue_key(catalog.clients.get_or_create("alice").id, ["images:read"])
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client, keys, app


def _upload(client, key, name, data, content_type="image/jpeg"):
    return client.post("/images", headers={"X-API-Key": key}, files={"file": (name, data, content_type)})


def test_health_needs_no_key(api):
    client, _, _ = api
    assert client.get("/health").json() == {"status": "ok", "catalog": "ok"}


def test_upload_validates_dedupes_and_isolates_tenants(api):
    client, keys, _ = api
    data = (SAMPLES / "Canon_40D.jpg").read_bytes()
    first = _upload(client, keys["alice"], "../../secret/Canon_40D.jpg", data, "text/plain")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "pending" and body["media_type"] == "image/jpeg"  # sniffed, not the client's claim
    assert body["original_name"] == "Canon_40D.jpg" and body["duplicate"] is False
    assert (body["width"], body["height"]) == (100, 68)

    again = _upload(client, keys["alice"], "copy.jpg", data)
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["duplicate"] is True

    bobs = _upload(client, keys["bob"], "Canon_40D.jpg", data)
    assert bobs.status_code == 201 and bobs.json()["id"] != body["id"]

    for path in (f"/images/{body['id']}", f"/images/{body['id']}/exif"):
        stolen = client.get(path, headers={"X-API-Key": keys["bob"]})
        assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "not_found"
    listed = client.get("/images", headers={"X-API-Key": keys["bob"]}).json()
    assert [i["id"] for i in listed["items"]] == [bobs.json()["id"]]


@pytest.mark.parametrize("name,data,status,code", [
    ("empty.jpg", b"", 400, "empty"),
    ("script.jpg", b"<?php echo 1; ?>", 415, "unsupported_type"),
    ("bomb.gif", None, 413, "too_many_pixels"),
    ("truncated.jpg", None, 422, "corrupt"),
    ("large-truncated.jpg", None, 422, "corrupt"),  # over 1 MiB: checked in a worker thread, not the batch's
])
def test_bad_uploads_get_a_4xx_with_a_reason(api, name, data, status, code):
    client, keys, _ = api
    if name == "large-truncated.jpg":
        data = (SAMPLES / "iphone_hdr_YES.jpg").read_bytes()[:1_500_000]
    elif data is None:
        source = {"bomb.gif": "pillow__decompression_bomb.gif", "truncated.jpg": "pillow__truncated_jpeg.jpg"}[name]
        data = shared("bad", source).read_bytes()
    response = _upload(client, keys["alice"], name, data)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_oversize_upload_is_refused(api, settings):
    client, keys, app = api
    app.state.settings = settings.model_copy(update={"max_upload_bytes": 1000})
    response = _upload(client, keys["alice"], "big.jpg", (SAMPLES / "canon_hdr_YES.jpg").read_bytes())
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]


def test_keys_and_scopes_are_checked(api):
    client, keys, _ = api
    assert client.get("/images").status_code == 401
    assert client.get("/images", headers={"X-API-Key": "imk_not-a-key"}).status_code == 401
    denied = _upload(client, keys["reader"], "a.jpg", (SAMPLES / "Canon_40D.jpg").read_bytes())
    assert denied.status_code == 403 and "images:write" in denied.json()["error"]["message"]
    assert client.get("/images", headers={"X-API-Key": keys["reader"]}).status_code == 200


def test_query_after_processing_returns_exif_stages_and_filters(api, settings, dagster_instance):
    client, keys, _app = api
    headers = {"X-API-Key": keys["alice"]}
    ids = {}
    for name in ("Canon_40D.jpg", "Nikon_D70.jpg", "iphone_hdr_YES.jpg", "phototest.tif"):
        ids[name] = _upload(client, keys["alice"], name, (SAMPLES / name).read_bytes()).json()["id"]
    before = client.get(f"/images/{ids['Canon_40D.jpg']}/exif", headers=headers)
    assert before.status_code == 404 and before.json()["error"]["code"] == "not_ready"

    process_images(sorted(ids.values()), settings=settings, instance=dagster_instance)

    detail = client.get(f"/images/{ids['iphone_hdr_YES.jpg']}", headers=headers).json()
    assert detail["status"] == "done"
    assert {s["stage"]: s["status"] for s in detail["stages"]} == {
        "exif": "done", "thumbnail": "done", "ocr": "done", "embedding": "done", "classification": "done",
        "vision": "done"}
    assert detail["classification"]["label"] in ("cat", "dog", "other") and detail["classification"]["model_version"]
    assert {c["check_name"]: c["passed"] for c in detail["checks"]} == {
        "plausible_dates_and_gps": True, "thumbnail_decodes": True, "confidence_recorded": True,
        "output_matches_schema": True}
    assert detail["ai"]["model_used"] == "local-content-v2" and "geotagged" in detail["ai"]["tags"]
    assert detail["exif"]["make"] == "Apple" and detail["exif"]["gps_longitude"] < 0
    assert detail["thumbnail"]["width"] == 256
    exif = client.get(f"/images/{ids['Nikon_D70.jpg']}/exif", headers=headers).json()
    assert exif["make"] == "NIKON CORPORATION" and exif["model"] == "NIKON D70"

    nikon = client.get("/images", headers=headers, params={"camera_make": "nikon corporation"}).json()
    assert [i["id"] for i in nikon["items"]] == [ids["Nikon_D70.jpg"]]
    done = client.get("/images", headers=headers, params={"status": "done", "limit": 2}).json()
    assert done["total"] == 4 and len(done["items"]) == 2 and done["limit"] == 2
    page2 = client.get("/images", headers=headers, params={"status": "done", "limit": 2, "offset": 2}).json()
    assert not {i["id"] for i in done["items"]} & {i["id"] for i in page2["items"]}
    page = client.get(f"/images/{ids['phototest.tif']}/ocr", headers=headers).json()
    assert page["has_text"] and "quick brown dog" in page["text"] and page["language"] == "en"
    assert page["engine"] == "tesseract" and page["words"][0]["width"] > 0
    photo_ocr = client.get(f"/images/{ids['Canon_40D.jpg']}/ocr", headers=headers).json()
    assert photo_ocr["has_text"] is False and photo_ocr["mode"] == "probe"
    found = client.get("/images", headers=headers, params={"q": "quick dog"}).json()
    assert [i["id"] for i in found["items"]] == [ids["phototest.tif"]]
    assert client.get("/images", headers={"X-API-Key": keys["bob"]}, params={"q": "quick dog"}).json()["total"] == 0
    tags = {t["tag"]: t["count"] for t in client.get("/images/tags/all", headers=headers).json()}
    assert tags["landscape"] >= 2 and tags["text"] == 1 and tags["canon"] == 1
    assert client.get("/images/tags/all", headers={"X-API-Key": keys["bob"]}).json() == []
    status = client.get(f"/images/{ids['Canon_40D.jpg']}/status", headers=headers).json()
    assert {s["stage"] for s in status["stages"]} == {"exif", "thumbnail", "ocr", "embedding", "classification",
                                                        "vision"}
    assert all(s["code_version"] for s in status["stages"])
    assert client.get(f"/images/{ids['Canon_40D.jpg']}/status", headers={"X-API-Key": keys["bob"]}).status_code == 404
    future = client.get("/images", headers=headers, params={"created_from": "2999-01-01T00:00:00Z"}).json()
    assert future["total"] == 0
    assert client.get("/images", headers=headers, params={"status": "bogus"}).status_code == 422


def test_openapi_lists_every_route(api):
    client, _, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/images", "/images/{image_id}", "/images/{image_id}/exif", "/images/{image_id}/status",
            "/images/{image_id}/ocr", "/images/{image_id}/ai", "/images/tags/all", "/health"} <= set(paths)
    assert client.get("/docs").status_code == 200
