"""Blobs on a real S3-compatible server (moto_server on loopback): the store, the pipeline, the API, the drop
sensor."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from imago_api.main import create_app
from imago_pipeline.core.stores.blobs import BlobNotFound, S3BlobStore, build_blob_store, iter_s3_objects
from imago_pipeline.defs.intake.sensors import s3_drop_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.in_process import get_instance, process_images
from tests.conftest import SAMPLES, shared
from tests.http_server import serve


def _keys(store: S3BlobStore) -> list[str]:
    return [o["Key"] for o in iter_s3_objects(store.client, store.bucket, "")]


def test_s3_store_round_trip_and_presigned_urls(s3_settings):
    store = build_blob_store(s3_settings)
    assert isinstance(store, S3BlobStore)
    data = (SAMPLES / "Canon_40D.jpg").read_bytes()
    store.put("tenants/1/originals/ab/abc", data)
    assert store.exists("tenants/1/originals/ab/abc") and not store.exists("tenants/1/nothing")
    assert store.get("tenants/1/originals/ab/abc") == data
    assert _keys(store) == ["blobs/tenants/1/originals/ab/abc"]  # under the configured prefix
    url = store.presigned_url("tenants/1/originals/ab/abc", expires_in=60, filename="café.jpg",
                              media_type="image/jpeg")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    served = httpx.get(url)
    assert served.status_code == 200 and served.content == data
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["content-disposition"] == "attachment; filename*=UTF-8''caf%C3%A9.jpg"
    for bad in ("../escape", "/absolute", "a/../../b"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    store.delete("tenants/1/originals/ab/abc")
    with pytest.raises(BlobNotFound):
        store.get("tenants/1/originals/ab/abc")


@pytest.mark.slow
def test_pipeline_and_api_on_s3_blobs(s3_settings):
    app = create_app(s3_settings)
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("s3", scopes=["images:read", "images:write",
                                                                   "images:delete"]).id)
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        data = (SAMPLES / "Canon_40D.jpg").read_bytes()
        image = client.post("/images", files={"file": ("Canon_40D.jpg", data, "image/jpeg")}).json()
        process_images([image["id"]], settings=s3_settings, instance=get_instance(s3_settings))
        detail = client.get(f"/images/{image['id']}").json()
        assert detail["status"] == "done" and detail["exif"]["make"] == "Canon"
        store = app.state.blobs
        keys = _keys(store)
        assert f"blobs/tenants/1/originals/{image['sha256'][:2]}/{image['sha256']}-{image['uuid']}" in keys
        assert f"blobs/tenants/1/thumbnails/{image['id']}.jpg" in keys
        assert not s3_settings.blob_root.exists()  # nothing on the local disk

        # the API decides (signed, revocable link), S3 serves the bytes (a redirect to a short presigned URL)
        link = client.get(f"/images/{image['id']}/download-url").json()["url"]
        redirect = httpx.get(link)
        assert redirect.status_code == 307
        target = redirect.headers["location"]
        assert target.startswith(s3_settings.s3_endpoint_url) and "X-Amz-Signature=" in target  # presigned by S3
        assert "Expires=60" in target or "X-Amz-Expires=60" in target
        assert httpx.get(link, follow_redirects=True).content == data
        thumb = client.get(f"/images/{image['id']}/thumbnail-url").json()["url"]
        assert httpx.get(thumb, follow_redirects=True).headers["content-type"] == "image/jpeg"

        assert client.delete(f"/images/{image['id']}").status_code == 204
        # original and thumbnail erased from the bucket; the registry's model artifact stays
        assert [k for k in _keys(store) if not k.startswith("blobs/models/")] == []


def test_s3_drop_sensor_registers_objects_and_rejects_bad_ones(s3_settings, catalog, dagster_instance):
    settings = s3_settings.model_copy(update={"s3_drop_uri": f"s3://{s3_settings.s3_bucket}/drop",
                                              "max_upload_bytes": 2_000_000})
    resources = build_resources(settings)
    client = resources["blobs"].s3()
    bucket = settings.s3_bucket
    client.put_object(Bucket=bucket, Key="drop/album/canon.jpg", Body=(SAMPLES / "Canon_40D.jpg").read_bytes())
    client.put_object(Bucket=bucket, Key="drop/nikon.jpg", Body=(SAMPLES / "Nikon_D70.jpg").read_bytes())
    client.put_object(Bucket=bucket, Key="drop/notes.jpg",
                      Body=shared("bad", "pillow__truncated_jpeg.jpg").read_bytes())
    client.put_object(Bucket=bucket, Key="drop/huge.jpg", Body=b"\xff\xd8\xff" + b"0" * 2_000_000)
    client.put_object(Bucket=bucket, Key="drop/.hidden/skip.jpg", Body=b"x")

    with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
        result = s3_drop_sensor(context)

    assert "registered 2 objects, rejected 2" in result.skip_message
    keys = sorted(o["Key"] for o in iter_s3_objects(client, bucket, "drop/"))
    imported = [k for k in keys if k.startswith("drop/.imported/")]
    rejected = [k for k in keys if k.startswith("drop/.rejected/")]
    assert sorted(k.split("/", 3)[3] for k in imported) == ["album/canon.jpg", "nikon.jpg"]
    assert sorted(k.split("/", 3)[3] for k in rejected) == ["huge.jpg", "huge.jpg.reason.txt", "notes.jpg",
                                                            "notes.jpg.reason.txt"]
    reason = client.get_object(Bucket=bucket, Key=next(k for k in rejected if k.endswith("huge.jpg.reason.txt")))
    assert b"over the limit" in reason["Body"].read()
    assert "drop/.hidden/skip.jpg" in keys and not [k for k in keys if k.count("/") == 1]
    pending = catalog.work.ids_with_status("pending")
    assert len(pending) == 2
    names = {catalog.work.images_by_id(pending)[i].original_name for i in pending}
    assert names == {"canon.jpg", "nikon.jpg"}
    with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
        again = s3_drop_sensor(context)
    assert "nothing under" in again.skip_message


@pytest.mark.slow
def test_the_lake_on_s3_pipeline_models_queries_compaction_and_erasure(s3_settings, monkeypatch):
    """IMAGO_LAKE_URI=s3://…: the pipeline writes its lake tables to S3, `imago sql` and the SQL model assets
    read them through DuckDB (no httpfs), compaction folds them there, and erasure removes the image from
    every lake object; nothing of the lake touches the local disk."""
    import duckdb
    from typer.testing import CliRunner

    from imago_pipeline.cli import app as cli
    from imago_pipeline.core.stores.lake_files import S3LakeFiles, lake_files_for

    settings = s3_settings.model_copy(update={"lake_uri": f"s3://{s3_settings.s3_bucket}/lake",
                                              "analytics_min_group_size": 1})
    files = lake_files_for(settings)
    assert isinstance(files, S3LakeFiles)
    app = create_app(settings)
    catalog = app.state.catalog
    key = catalog.clients.issue_key(catalog.clients.create("lake", scopes=["images:read", "images:write",
                                                                     "images:delete"]).id)
    names = ("Canon_40D.jpg", "Nikon_D70.jpg")
    with serve(app) as base_url, httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as client:
        ids = [client.post("/images", files={"file": (n, (SAMPLES / n).read_bytes(), "image/jpeg")}).json()["id"]
               for n in names]
        process_images(ids, settings=settings, instance=get_instance(settings))
        assert all(client.get(f"/images/{i}").json()["status"] == "done" for i in ids)
        assert files.glob("exif/*/*/part-*.parquet") and files.glob("images/*/*/part-*.parquet")
        assert not settings.lake_root.exists()  # nothing on the local disk

        # `imago sql` with the environment a user would set, and the SQL model assets (as Dagster runs them)
        for name, value in {"IMAGO_HOME": str(settings.resolved_home), "IMAGO_DATABASE_URL": settings.catalog_url,
                            "IMAGO_LAKE_URI": settings.lake_uri, "IMAGO_S3_ENDPOINT_URL": settings.s3_endpoint_url,
                            "IMAGO_S3_ACCESS_KEY_ID": settings.s3_access_key_id,
                            "IMAGO_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
                            "IMAGO_ANALYTICS_MIN_GROUP_SIZE": "1"}.items():
            monkeypatch.setenv(name, value)
        built = CliRunner().invoke(cli, ["sql", "--build", "--json",
                                         "SELECT make, images FROM camera_counts ORDER BY make"])
        assert built.exit_code == 0, built.output
        assert '"make": "Canon"' in built.stdout and '"make": "NIKON CORPORATION"' in built.stdout
        assert files.exists("models/camera_counts/camera_counts.parquet")
        queried = CliRunner().invoke(cli, ["sql", "--csv", "SELECT image_id, make FROM exif ORDER BY image_id"])
        assert queried.exit_code == 0, queried.output
        assert queried.stdout.splitlines()[1:] == [f"{ids[0]},Canon", f"{ids[1]},NIKON CORPORATION"]
        # the sandbox holds on S3 too: a query cannot read outside the lake
        with pytest.raises(duckdb.Error):
            from imago_pipeline.core.analytics import open_analytics

            open_analytics(files).execute("SELECT * FROM read_text('/etc/hostname')").fetchall()

        compacted = CliRunner().invoke(cli, ["compact", "--grace", "0"])
        assert compacted.exit_code == 0, compacted.output
        assert files.glob("exif/*/_compacted/*.parquet")

        assert client.delete(f"/images/{ids[0]}").status_code == 204
        for path in files.glob("*/**/*.parquet"):
            table = files.read_table(path)
            if "image_id" in table.column_names:
                assert ids[0] not in table.column("image_id").to_pylist(), path
        again = CliRunner().invoke(cli, ["sql", "--csv", "SELECT image_id FROM exif"])
        assert again.stdout.splitlines()[1:] == [str(ids[1])]
