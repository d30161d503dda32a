"""Security suite, table-driven over every route, over real HTTP.

`ROUTES` names every route of the app with the scope it needs; a test fails when a route is added without
an entry, so a new route cannot skip these checks.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text

from imago_api.main import create_app
from imago_pipeline.core.catalog import ALL_SCOPES
from imago_pipeline.core.config import ImagoSettings, Plan
from imago_pipeline.core.stores.signing import FileGrant, InvalidToken, UrlSigner, load_or_create_secret
from imago_pipeline.in_process import get_instance, process_images
from tests.conftest import SAMPLES, shared
from tests.http_server import serve

ADMIN_KEY = "operator-key-for-the-security-suite"
PHOTO = SAMPLES / "Canon_40D.jpg"

# (method, path, scope or None for public routes, request kwargs). `{image}` is an image of the caller's
# tenant unless a test swaps in another tenant's; `{client}` a client id.
ROUTES = [
    ("GET", "/", None, {}),
    ("GET", "/health", None, {}),
    ("GET", "/metrics", None, {}),
    ("GET", "/files/signed/{token}", None, {}),
    ("GET", "/health/detailed", None, {}),  # any valid key (tested in test_seed_contract and test_api_operations)
    ("POST", "/images", "images:write", {"files": {"file": ("x.jpg", PHOTO.read_bytes(), "image/jpeg")}}),
    ("POST", "/images/upload", "images:write", {"files": {"file": ("y.jpg", PHOTO.read_bytes(), "image/jpeg")}}),
    ("GET", "/images", "images:read", {}),
    ("GET", "/images/tags/all", "images:read", {}),
    ("GET", "/images/duplicates", "images:read", {}),
    ("GET", "/images/{image}", "images:read", {}),
    ("GET", "/images/{image}/status", "images:read", {}),
    ("GET", "/images/{image}/events", "images:read", {}),  # the image is done: its state, then the end
    ("GET", "/images/{image}/exif", "images:read", {}),
    ("GET", "/images/{image}/ocr", "images:read", {}),
    ("GET", "/images/{image}/ai", "images:read", {}),
    ("GET", "/images/{image}/similar", "images:read", {}),
    ("GET", "/images/{image}/download-url", "images:read", {}),
    ("GET", "/images/{image}/thumbnail-url", "images:read", {}),
    ("POST", "/images/{image}/reprocess", "images:write", {}),
    ("POST", "/images/{image}/feedback", "images:write", {"json": {"correct": True}}),
    ("DELETE", "/images/{image}", "images:delete", {}),
    ("POST", "/api/predict", "ai:use", {"files": {"file": ("x.jpg", PHOTO.read_bytes(), "image/jpeg")}}),
    ("POST", "/ai/summarize", "ai:use", {"json": {"url": "http://127.0.0.1:9/", "max_sentences": 2}}),
    ("POST", "/ai/draft-task", "ai:use", {"json": {"description": "Send the report by Friday."}}),
    ("POST", "/auth/clients", "admin", {"json": {"name": "made-by-table"}}),
    ("GET", "/auth/clients", "admin", {}),
    ("GET", "/auth/clients/{client}", "admin", {}),
    ("PATCH", "/auth/clients/{client}", "admin", {"json": {"plan": "pro"}}),
    ("DELETE", "/auth/clients/{client}", "admin", {}),
    ("POST", "/auth/clients/{client}/rotate-key", "admin", {}),
]
SCOPED = [r for r in ROUTES if r[2]]
IMAGE_ROUTES = [r for r in SCOPED if "{image}" in r[1]]
OPENAPI_PATH = {"{image}": "{image_id}", "{client}": "{client_id}"}


def _openapi_path(path: str) -> str:
    for ours, theirs in OPENAPI_PATH.items():
        path = path.replace(ours, theirs)
    return path


class World:
    """Two tenants on one API, each scope as its own key, and a processed image per tenant."""

    def __init__(self, client: httpx.Client, app, settings: ImagoSettings):
        self.http, self.app, self.settings = client, app, settings
        catalog = app.state.catalog
        self.alice = catalog.clients.create("alice", scopes=ALL_SCOPES[:-1])  # everything but admin
        self.bob = catalog.clients.create("bob", scopes=ALL_SCOPES[:-1])
        self.alice_key = catalog.clients.issue_key(self.alice.id)
        self.bob_key = catalog.clients.issue_key(self.bob.id)
        self.admin = catalog.clients.create("ops", scopes=["admin"])
        self.admin_key = catalog.clients.issue_key(self.admin.id)
        self.scope_keys = {s: catalog.clients.issue_key(self.alice.id, [s]) for s in ALL_SCOPES[:-1]}
        self.scope_keys["admin"] = self.admin_key
        self.alice_image = self.upload(self.alice_key, PHOTO.read_bytes(), "alice.jpg").json()["id"]
        self.bob_image = self.upload(self.bob_key, (SAMPLES / "Nikon_D70.jpg").read_bytes(), "bob.jpg").json()["id"]
        process_images([self.alice_image, self.bob_image], settings=settings, instance=get_instance(settings))

    def upload(self, key: str, data: bytes, name: str, content_type: str = "image/jpeg") -> httpx.Response:
        return self.http.post("/images", headers={"X-API-Key": key}, files={"file": (name, data, content_type)})

    def call(self, method: str, path: str, kwargs: dict, key: str | None, *, image: int | None = None,
             client: int | None = None) -> httpx.Response:
        path = path.replace("{image}", str(image or self.alice_image)).replace("{client}", str(client or self.bob.id))
        path = path.replace("{token}", "not-a-token")
        headers = {"X-API-Key": key} if key else {}
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("security")
    settings = ImagoSettings(home=home / "imago", workers=2, batch_size=50, admin_api_key=ADMIN_KEY,
                             log_format="text", max_upload_bytes=2_000_000,
                             plans={"free": Plan(rate_limit="100000/minute", quota_bytes=None)})
    app = create_app(settings)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield World(client, app, settings)


def test_every_route_is_in_the_table_and_names_its_scope(world):
    documented = {(method.upper(), path): operation for path, item in world.app.openapi()["paths"].items()
                  for method, operation in item.items()}
    table = {(m, _openapi_path(p)): scope for m, p, scope, _ in ROUTES}
    assert set(documented) == set(table)
    for key, scope in table.items():
        summary = documented[key]["summary"]
        assert (f"(scope {scope})" in summary) if scope else ("scope" not in summary), (key, summary)


@pytest.mark.parametrize("method,path,scope,kwargs", SCOPED, ids=[f"{m} {p}" for m, p, _, _ in SCOPED])
def test_each_route_needs_a_key_and_its_scope(world, method, path, scope, kwargs):
    missing = world.call(method, path, kwargs, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "not_authenticated"
    forged = world.call(method, path, kwargs, "imk_" + "A" * 43)
    assert forged.status_code == 401
    for other_scope, key in world.scope_keys.items():
        if other_scope == scope:
            continue
        refused = world.call(method, path, kwargs, key)
        assert refused.status_code == 403, (other_scope, refused.text)
        assert refused.json()["error"] == {"code": "missing_scope", "scope": scope,
                                           "message": f"this API key lacks the '{scope}' scope"}


@pytest.mark.parametrize("method,path,scope,kwargs", IMAGE_ROUTES, ids=[f"{m} {p}" for m, p, _, _ in IMAGE_ROUTES])
def test_another_tenants_image_is_not_found_everywhere(world, method, path, scope, kwargs):
    stolen = world.call(method, path, kwargs, world.bob_key, image=world.alice_image)
    assert stolen.status_code == 404, stolen.text
    assert stolen.json()["error"]["code"] == "not_found"
    assert world.app.state.catalog.for_tenant(world.alice.id).get_image(world.alice_image).status == "done"


def test_the_operator_key_from_the_environment_is_admin_only(world):
    assert world.http.get("/auth/clients", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert world.http.get("/health/detailed", headers={"X-API-Key": ADMIN_KEY}).status_code in (200, 503)
    refused = world.http.get("/images", headers={"X-API-Key": ADMIN_KEY})
    assert refused.status_code == 403 and refused.json()["error"]["scope"] == "images:read"
    assert world.http.get("/auth/clients", headers={"X-API-Key": ADMIN_KEY + "x"}).status_code == 401


def test_the_catalog_holds_no_raw_key(world):
    keys = [world.alice_key, world.bob_key, world.admin_key, *world.scope_keys.values()]
    engine = world.app.state.catalog.engine
    dump = []
    with engine.connect() as connection:
        for table in sa_inspect(engine).get_table_names():
            dump += [repr(tuple(row)) for row in connection.execute(text(f'SELECT * FROM "{table}"'))]
    everything = "\n".join(dump)
    assert "api_keys" in sa_inspect(engine).get_table_names() and len(dump) > 10
    for key in keys:
        assert key not in everything and key[4:] not in everything
    db_file = world.settings.resolved_home / "catalog.db"
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("catalog.db*"))
    assert not any(key.encode() in raw for key in keys)


def test_signed_links_work_then_refuse_tampering_and_expiry(world):
    headers = {"X-API-Key": world.alice_key}
    link = world.http.get(f"/images/{world.alice_image}/download-url", headers=headers).json()
    token_url = httpx.URL(link["url"])
    assert link["expires_in"] == world.settings.signed_url_ttl_s
    served = world.http.get(token_url.path)  # no key: the link is the credential
    assert served.status_code == 200 and served.content == PHOTO.read_bytes()
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["content-disposition"] == "attachment; filename*=UTF-8''alice.jpg"

    token = token_url.path.rsplit("/", 1)[1]
    for tampered in (token[:-1] + ("A" if token[-1] != "A" else "B"), token[:5] + "x" + token[6:], token + "x",
                     "e30.AAAA", "../../etc/passwd"):
        refused = world.http.get(f"/files/signed/{tampered}")
        assert refused.status_code in (403, 404) and refused.status_code != 200, tampered
        if refused.status_code == 403:
            assert refused.json()["error"]["code"] == "invalid_link"
    # A token of one image cannot be re-targeted: the image id is inside the signed payload.
    thumb = world.http.get(f"/images/{world.alice_image}/thumbnail-url", headers=headers).json()
    served = world.http.get(httpx.URL(thumb["url"]).path)
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"

    short = world.http.get(f"/images/{world.alice_image}/download-url", params={"expires_in": 1},
                           headers=headers).json()
    time.sleep(2.1)
    expired = world.http.get(httpx.URL(short["url"]).path)
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "link_expired"
    capped = world.http.get(f"/images/{world.alice_image}/download-url", params={"expires_in": 10**9},
                            headers=headers).json()
    assert capped["expires_in"] == world.settings.signed_url_max_ttl_s


def test_a_token_differing_only_in_base64_spare_bits_is_refused():
    """The last base64 character of a signature carries bits the decoder drops; each spelling must be refused."""
    signer = UrlSigner("a-secret-for-this-test")
    refused = 0
    for image_id in range(1, 40):  # signatures whose spare bits are free to flip
        token = signer.sign(FileGrant(1, image_id, "original", int(time.time()) + 60, "6bfdabd4fc33d112", 1))
        assert signer.verify(token).image_id == image_id
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        value = alphabet.index(token[-1])
        for spare in range(1, 4):  # a 20-byte signature leaves the two low bits of its 27th character unused
            twin = token[:-1] + alphabet[value ^ spare]
            with pytest.raises(InvalidToken):
                signer.verify(twin)
            refused += 1
    assert refused == 39 * 3


def test_a_signing_secret_left_empty_or_cut_short_is_replaced(tmp_path):
    """A secret file left empty (a crash while an earlier version wrote it in place) made every later start
    sign links with an empty key, which anyone can forge. It is replaced; a sound one is kept."""
    path = tmp_path / "home" / "signing.key"
    made = load_or_create_secret(path)
    assert len(made) == 64 and path.read_text() == made and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == made  # kept
    for broken in ("", "\n", made[:20]):
        path.write_text(broken)
        replaced = load_or_create_secret(path)
        assert len(replaced) == 64 and replaced != made and path.read_text() == replaced
    assert sorted(p.name for p in path.parent.iterdir()) == [".signing.key.lock", "signing.key"]  # no temporaries


@pytest.mark.parametrize("variable", ["IMAGO_SIGNING_SECRET", "IMAGO_ADMIN_API_KEY"])
def test_a_configured_secret_or_operator_key_must_be_long_enough(monkeypatch, variable):
    field = variable.removeprefix("IMAGO_").lower()
    monkeypatch.setenv(variable, "guessable")
    with pytest.raises(ValidationError, match="at least 32 characters") as refused:
        ImagoSettings()
    assert "guessable" not in str(refused.value)  # the refused secret is not printed
    monkeypatch.setenv(variable, " ")
    assert getattr(ImagoSettings(), field) is None  # unset (a signing secret: the one made in the home is used)
    monkeypatch.setenv(variable, "s" * 32)
    assert getattr(ImagoSettings(), field).get_secret_value() == "s" * 32


def test_processes_starting_together_on_a_fresh_home_share_one_secret(tmp_path):
    """Eight processes (an API's workers) asking for the secret at the same moment on a fresh home: one
    secret for all, never an empty one read half written."""
    path, start = tmp_path / "home" / "signing.key", time.time() + 2
    script = ("import sys, time; from pathlib import Path; "
              "from imago_pipeline.core.stores.signing import load_or_create_secret; "
              f"time.sleep(max(0, {start} - time.time())); print(load_or_create_secret(Path({str(path)!r})))")
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
                 for _ in range(8)]
    secrets_seen = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert secrets_seen == {path.read_text()} and len(path.read_text()) == 64


def _raw_multipart_upload(world, key: str, filename: bytes, data: bytes) -> httpx.Response:
    """httpx percent-encodes odd file names; an attacker's client does not, so send the bytes as they are."""
    body = (b'--imagoboundary\r\nContent-Disposition: form-data; name="file"; filename="' + filename +
            b'"\r\nContent-Type: image/jpeg\r\n\r\n' + data + b"\r\n--imagoboundary--\r\n")
    return world.http.post("/images", content=body, headers={
        "X-API-Key": key, "Content-Type": "multipart/form-data; boundary=imagoboundary"})


@pytest.mark.parametrize("name,stored", [
    (b"../../etc/passwd.jpg", "passwd.jpg"),
    (b"..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    (b"tab\tand\x00null\x1b[31m\x7f.jpg", "tabandnull[31m.jpg"),
    (b"/absolute/.hidden.jpg", "hidden.jpg"),
    (b"...", "upload"),
    ("caf\u00e9 \u202eexe.jpg".encode(), "café exe.jpg"),  # right-to-left override removed
    (b"a\r\nSet-Cookie: x=1.jpg", None),  # a broken header: whatever is parsed must come out clean
])
def test_file_names_cannot_traverse_or_inject(world, name, stored):
    data = (SAMPLES / "Canon_40D.jpg").read_bytes() + name  # new bytes each time (no dedupe)
    key = world.bob_key
    response = _raw_multipart_upload(world, key, name, data)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:  # the multipart parser refused the broken header: a clear 4xx
        assert stored is None and response.json()["error"]["code"] == "invalid_request"
        return
    image = response.json()
    kept = image["original_name"]
    if stored is not None:
        assert kept == stored
    assert not any(ord(ch) < 32 or ord(ch) == 127 or ch in "/\\" for ch in kept) and not kept.startswith(".")
    assert not any(world.settings.blob_root.parent.rglob("passwd*")) and not Path("/etc/passwd.jpg").exists()
    link = world.http.get(f"/images/{image['id']}/download-url", headers={"X-API-Key": key}).json()
    served = world.http.get(httpx.URL(link["url"]).path)
    assert served.status_code == 200
    assert "\r" not in served.headers["content-disposition"] and "\n" not in served.headers["content-disposition"]
    assert world.http.delete(f"/images/{image['id']}", headers={"X-API-Key": key}).status_code == 204


def test_oversize_wrong_type_and_bombs_are_refused(world):
    key = world.bob_key
    big = world.upload(key, b"\xff\xd8\xff" + b"0" * world.settings.max_upload_bytes, "big.jpg")
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    script = world.upload(key, b"#!/bin/sh\nrm -rf /\n", "run.jpg")
    assert script.status_code == 415 and script.json()["error"]["code"] == "unsupported_type"
    svg = world.upload(key, b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.svg",
                       "image/svg+xml")
    assert svg.status_code == 415
    for bomb in ("pillow__decompression_bomb.gif", "fuzzdb__lottapixel.jpg"):
        refused = world.upload(key, shared("bad", bomb).read_bytes(), bomb)
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_many_pixels"


BAD_FILES = sorted(p for p in shared("bad").iterdir() if not p.name.endswith((".txt", ".md", ".csv")))


@pytest.mark.timeout(600)
def test_every_hostile_file_gets_a_4xx_or_a_recorded_failure(world):
    """Prints the table the closing note lists: file, HTTP answer, and the pipeline's outcome."""
    key, accepted, table = world.bob_key, {}, {}
    for path in BAD_FILES:
        response = world.upload(key, path.read_bytes(), path.name)
        assert response.status_code < 500, (path.name, response.text)
        if response.status_code in (200, 201):
            accepted[path.name] = response.json()["id"]
            table[path.name] = f"{response.status_code} accepted"
        else:
            assert 400 <= response.status_code < 500 and response.json()["error"]["message"]
            table[path.name] = f"{response.status_code} {response.json()['error']['code']}"
    started = time.perf_counter()
    process_images(sorted(set(accepted.values())), settings=world.settings, instance=get_instance(world.settings))
    assert time.perf_counter() - started < 300
    for name, image_id in accepted.items():
        detail = world.http.get(f"/images/{image_id}", headers={"X-API-Key": key}).json()
        assert detail["status"] in ("done", "failed"), (name, detail["status"])
        if detail["status"] == "failed":
            assert detail["error"], name
        table[name] += f" -> {detail['status']}" + (f" ({detail['error']})" if detail["error"] else "")
    print("\nhostile file | answer")
    for name, outcome in table.items():
        print(f"{name} | {outcome}")
    assert len(table) == len(BAD_FILES) == 31
    # the accepted ones are valid images with hostile metadata or headers: every stage copes with them
    assert [name for name, outcome in table.items() if "accepted" in outcome and "-> done" not in outcome] == []
