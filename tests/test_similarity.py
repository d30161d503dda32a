"""Similar images and near-duplicates, on real photos and re-encoded, resized and converted copies of them:
the core rule, then the API, the CLI and tenant isolation over images processed by the pipeline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from imago_api.main import create_app
from imago_pipeline.core.embedding.encoder import Encoder
from imago_pipeline.core.embedding.similarity import duplicate_groups
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.in_process import process_images
from tests.conftest import REPO, shared
from tests.http_server import serve

OTHER = REPO / "training" / "data" / "other"


def copies(data: bytes) -> dict[str, bytes]:
    """The same picture stored differently: what duplicate detection must find."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    out = {}
    for name, save in {
        "jpeg-q75": lambda im, f: im.save(f, "JPEG", quality=75),
        "jpeg-q30": lambda im, f: im.save(f, "JPEG", quality=30),
        "png": lambda im, f: im.save(f, "PNG"),
        "webp": lambda im, f: im.save(f, "WEBP", quality=80),
        "half": lambda im, f: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(f, "JPEG"),
        "quarter": lambda im, f: im.resize((im.width // 4, im.height // 4), Image.Resampling.LANCZOS).save(f, "PNG"),
    }.items():
        buffer = io.BytesIO()
        save(image, buffer)
        out[name] = buffer.getvalue()
    return out


def originals() -> list[Path]:
    """Photos that look alike without being the same picture: two different photos from one camera and trip,
    two typed pages of one archive, two screenshots of one application, a landscape."""
    return [shared("exif", "exif-samples", "jpg", "gps", "DSCN0010.jpg"),
            shared("exif", "exif-samples", "jpg", "gps", "DSCN0012.jpg"),
            *sorted(shared("ocr", "tapuscorpus").glob("*.jpg"))[:2],
            *sorted((OTHER / "jupyterlab" / "train").glob("*.jpg"))[:2],
            next((OTHER / "lomiri-wallpapers" / "train").glob("*.jpg"))]


def test_copies_are_grouped_and_look_alike_pictures_are_not():
    encoder = Encoder()
    files, truth = [], []
    for n, path in enumerate(originals()):
        data = path.read_bytes()
        files += [data, *copies(data).values()] if n % 2 == 0 else [data]
        truth += [n] * (7 if n % 2 == 0 else 1)
    found = encoder.encode_images(files)
    groups = duplicate_groups(list(range(len(files))), np.stack([f.vector for f in found]),
                              np.stack([f.fingerprint for f in found]))
    expected = sorted([[i for i, t in enumerate(truth) if t == n] for n in set(truth) if truth.count(n) > 1])
    assert sorted(g.image_ids for g in groups) == expected
    assert all(g.min_score >= 0.99 for g in groups)
    # what the embedding alone would have said: the look-alikes are as close as the copies
    vectors = np.stack([f.vector for f in found]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first_page, second_page = truth.index(2), truth.index(3)
    assert vectors[first_page] @ vectors[second_page] > 0.9


@pytest.fixture
def processed(catalog, settings, dagster_instance):
    """Two tenants' images through the pipeline: tenant a has an original with three copies, another
    original with one, and two unrelated images; tenant b has a copy of a's first original."""
    store = LocalBlobStore(settings.blob_root)
    first, second = shared("exif", "exif-samples", "jpg", "gps", "DSCN0010.jpg"), \
        shared("exif", "exif-samples", "jpg", "gps", "DSCN0021.jpg")
    first_copies, second_copies = copies(first.read_bytes()), copies(second.read_bytes())
    files = {"first.jpg": first.read_bytes(), "first-q30.jpg": first_copies["jpeg-q30"],
             "first-half.jpg": first_copies["half"], "first.png": first_copies["png"],
             "second.jpg": second.read_bytes(), "second.webp": second_copies["webp"],
             "page.jpg": sorted(shared("ocr", "tapuscorpus").glob("*.jpg"))[0].read_bytes(),
             "cat.jpg": sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))[0].read_bytes()}
    ids = {}
    for tenant_name, names in (("a", list(files)), ("b", ["first-half.jpg"])):
        tenant = catalog.clients.get_or_create(tenant_name)
        for name in names:
            data = files[name] if tenant_name == "a" else first_copies["jpeg-q75"]
            ids[(tenant_name, name)] = register_image(catalog, store, settings, tenant_id=tenant.id, filename=name,
                                                      data=data, status="queued").image.id
    assert process_images(list(ids.values()), settings=settings, instance=dagster_instance)[0].success
    return ids


def test_api_similar_and_duplicates_are_tenant_scoped(catalog, settings, processed):
    ids = processed
    a, b = catalog.clients.by_name("a"), catalog.clients.by_name("b")
    with serve(create_app(settings)) as url, \
            httpx.Client(base_url=url, headers={"X-API-Key": catalog.clients.issue_key(a.id)}, timeout=60) as client:
        groups = client.get("/images/duplicates").json()
        found = sorted(sorted(image["original_name"] for image in g["images"]) for g in groups["groups"])
        assert found == [["first-half.jpg", "first-q30.jpg", "first.jpg", "first.png"], ["second.jpg", "second.webp"]]
        assert groups["threshold"] == 0.99 and all(g["min_score"] >= 0.99 for g in groups["groups"])

        similar = client.get(f"/images/{ids[('a', 'first.jpg')]}/similar", params={"limit": 5}).json()
        names = [item["image"]["original_name"] for item in similar["items"]]
        scores = [item["score"] for item in similar["items"]]
        assert set(names[:3]) == {"first-q30.jpg", "first-half.jpg", "first.png"} and scores == sorted(scores)[::-1]
        assert ids[("b", "first-half.jpg")] not in [item["image"]["id"] for item in similar["items"]]
        assert similar["items"][0]["score"] > 0.9 and -1 <= scores[-1] < scores[0]

        assert client.get(f"/images/{ids[('b', 'first-half.jpg')]}/similar").status_code == 404  # b's image
        assert client.get(f"/images/{ids[('a', 'first.jpg')]}/similar", params={"limit": 0}).status_code == 422
        assert client.get("/images/duplicates", params={"threshold": 0.5}).status_code == 422
        strict = client.get("/images/duplicates", params={"threshold": 1.0}).json()["groups"]
        assert all({i["original_name"] for i in g["images"]} <= set(found[0]) | set(found[1]) for g in strict)

    with serve(create_app(settings)) as url, \
            httpx.Client(base_url=url, headers={"X-API-Key": catalog.clients.issue_key(b.id)}, timeout=60) as client:
        assert client.get("/images/duplicates").json()["groups"] == []  # one image: nothing to pair
        own = client.get(f"/images/{ids[('b', 'first-half.jpg')]}/similar").json()
        assert own["items"] == []


def test_cli_similar_and_duplicates(catalog, settings, processed):
    env = {**os.environ, "IMAGO_HOME": str(settings.home), "IMAGO_DATABASE_URL": settings.catalog_url}
    run = subprocess.run([sys.executable, "-m", "imago_pipeline", "duplicates", "--tenant", "a", "--json"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    groups = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(len(g["image_ids"]) for g in groups) == [2, 4]
    first = processed[("a", "first.jpg")]
    run = subprocess.run([sys.executable, "-m", "imago_pipeline", "similar", str(first), "--tenant", "a", "--limit",
                          "3", "--json"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert {json.loads(line)["original_name"] for line in run.stdout.splitlines()} == \
        {"first-q30.jpg", "first-half.jpg", "first.png"}
    missing = subprocess.run([sys.executable, "-m", "imago_pipeline", "similar", "999999", "--tenant", "a"],
                             capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert missing.returncode == 2 and "no image 999999" in missing.stderr
