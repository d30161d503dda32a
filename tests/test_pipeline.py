"""The Dagster assets over real images, in ranged runs, on SQLite and Postgres catalogs."""

from __future__ import annotations

import io

import dagster as dg
import duckdb
from PIL import Image

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore, original_key
from imago_pipeline.definitions import build_definitions
from imago_pipeline.in_process import process_images
from tests.conftest import SAMPLES, shared


def _register_samples(catalog: Catalog, settings, tenant_id: int) -> list[int]:
    store = LocalBlobStore(settings.blob_root)
    ids = []
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix.lower() in (".jpg", ".png", ".webp", ".tif"):
            ids.append(register_image(catalog, store, settings, tenant_id=tenant_id, filename=path.name,
                                      data=path.read_bytes(), status="queued").image.id)
    return ids


def _register_without_validation(catalog: Catalog, settings, tenant_id: int, data: bytes) -> int:
    """An image an older, laxer validator let through: its stages must fail alone."""
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    key = original_key(tenant_id, sha, "u1")
    LocalBlobStore(settings.blob_root).put(key, data)
    image, _ = catalog.for_tenant(tenant_id).register_image(
        sha256=sha, original_name="broken.jpg", media_type="image/jpeg", byte_size=len(data), width=1, height=1,
        blob_key=key, status="queued")
    return image.id


def test_definitions_load_and_describe_every_asset():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    for key in ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary"):
        node = graph.get(dg.AssetKey(key))
        assert node.description and node.kinds and node.group_name == "enrichment" and node.code_version
        assert node.partitions_def.name == "images"
    assert graph.get(dg.AssetKey("exif")).parent_keys == {dg.AssetKey("uploads")}
    assert graph.get(dg.AssetKey("vision")).parent_keys == {
        dg.AssetKey(k) for k in ("exif", "thumbnail", "ocr", "embedding", "classification")}
    assert graph.get(dg.AssetKey("classification")).parent_keys == {dg.AssetKey("embedding")}
    assert graph.get(dg.AssetKey("vision")).pools == {"vision_provider"}
    checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[0] != "analytics"}  # SQL model tests
    assert checks == {"plausible_dates_and_gps", "thumbnail_decodes", "confidence_recorded", "output_matches_schema",
                      "beats_production"}


def test_batch_enriches_images_and_one_bad_image_does_not_fail_it(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    good = _register_samples(catalog, settings, tenant.id)
    bad = _register_without_validation(catalog, settings, tenant.id,
                                       shared("bad", "pillow__truncated_jpeg.jpg").read_bytes())
    ids = sorted([*good, bad])

    runs = process_images(ids, settings=settings, instance=dagster_instance, batch_size=100)

    assert len(runs) == 1 and runs[0].success  # one ranged run for the whole batch
    for asset in ("exif", "thumbnail", "ocr", "vision", "image_summary"):
        assert dagster_instance.get_materialized_partitions(dg.AssetKey(asset)) == {str(i) for i in ids}

    images = catalog.work.images_by_id(ids)
    assert {images[i].status for i in good} == {"done"}
    assert images[bad].status == "failed" and "thumbnail" in images[bad].error
    scoped = catalog.for_tenant(tenant.id)
    stages = {s.stage: s for s in scoped.get_stages(bad)}
    assert stages["thumbnail"].status == "failed" and "truncated" in stages["thumbnail"].error

    by_name = {images[i].original_name: i for i in good}
    canon = scoped.get_exif(by_name["Canon_40D.jpg"])
    assert (canon.make, canon.model, canon.iso, canon.f_number) == ("Canon", "Canon EOS 40D", 100, 7.1)
    iphone = scoped.get_exif(by_name["iphone_hdr_YES.jpg"])
    assert iphone.gps_latitude > 40 and iphone.gps_longitude < 0

    page = scoped.get_ocr(by_name["eurotext.tif"])
    assert page.has_text and page.engine == "tesseract" and "renard" in page.text and page.words
    assert scoped.get_ocr(by_name["Nikon_D70.jpg"]).mode == "probe"
    vision = scoped.get_vision(by_name["phototest.tif"])
    assert vision.model_used == "local-content-v2" and "text" in vision.tags and "english" in vision.tags
    assert "Canon EOS 40D" in scoped.get_vision(by_name["Canon_40D.jpg"]).description

    checks = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("thumbnail"), "thumbnail_decodes")])
    assert checks[dg.AssetCheckKey(dg.AssetKey("thumbnail"), "thumbnail_decodes")].status.value == "SUCCEEDED"

    thumb = scoped.get_thumbnail(by_name["hopper_orientation_6.webp"])
    pixels = Image.open(io.BytesIO(LocalBlobStore(settings.blob_root).get(thumb.blob_key)))
    assert pixels.size == (thumb.width, thumb.height) and max(pixels.size) <= 256

    lake = settings.lake_root
    con = duckdb.connect()
    exif_rows = con.execute(
        f"SELECT tenant_id, count(*) FROM read_parquet('{lake}/exif/**/*.parquet', hive_partitioning=true) "
        "GROUP BY tenant_id").fetchall()
    exif_succeeded = len(good) + (stages["exif"].status == "done")  # its header is intact, its pixels are not
    assert exif_rows == [(tenant.id, exif_succeeded)]
    statuses = dict(con.execute(
        f"SELECT status, count(*) FROM read_parquet('{lake}/images/**/*.parquet') GROUP BY status").fetchall())
    assert statuses == {"done": len(good), "failed": 1}
    files = list((lake / "thumbnail").rglob("*.parquet"))
    assert len(files) == 1  # batch-sized files: one per (tenant, date) and run, not one per image
    names = con.execute(f"SELECT * FROM read_parquet('{lake}/images/**/*.parquet') LIMIT 1").description
    assert "original_name" not in {column[0] for column in names}  # no file names in the lake


def test_reprocessing_an_image_runs_it_alone(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    ids = _register_samples(catalog, settings, tenant.id)[:3]
    process_images(ids, settings=settings, instance=dagster_instance, batch_size=2)
    again = process_images([ids[1]], settings=settings, instance=dagster_instance, batch_size=2)
    assert len(again) == 1 and again[0].keys == [str(ids[1])] and again[0].success
    run = dagster_instance.get_run_by_id(again[0].run_id)
    assert run.tags.get("dagster/partition") == str(ids[1])


def _jpeg_with_exif(date: str, gps_zero: bool) -> bytes:
    import piexif

    image = Image.new("RGB", (64, 48), (90, 140, 200))
    exif = {"0th": {piexif.ImageIFD.Make: b"Test"}, "Exif": {piexif.ExifIFD.DateTimeOriginal: date.encode()},
            "GPS": {}}
    if gps_zero:
        exif["GPS"] = {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((0, 1), (0, 1), (0, 1)),
                       piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((0, 1), (0, 1), (0, 1))}
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=piexif.dump(exif))
    return out.getvalue()


def test_a_failed_check_is_recorded_in_dagster_and_on_the_image(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    future = register_image(catalog, store, settings, tenant_id=tenant.id, filename="future.jpg",
                            data=_jpeg_with_exif("2199:01:01 10:00:00", False), status="queued").image.id
    null_island = register_image(catalog, store, settings, tenant_id=tenant.id, filename="zero.jpg",
                                 data=_jpeg_with_exif("2020:01:01 10:00:00", True), status="queued").image.id
    fine = register_image(catalog, store, settings, tenant_id=tenant.id, filename="fine.jpg",
                          data=_jpeg_with_exif("2020:01:01 10:00:00", False), status="queued").image.id

    process_images([future, null_island, fine], settings=settings, instance=dagster_instance)

    key = dg.AssetCheckKey(dg.AssetKey("exif"), "plausible_dates_and_gps")
    execution = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert execution.status.value == "FAILED"  # what the Dagster UI shows on the asset
    scoped = catalog.for_tenant(tenant.id)
    verdicts = {i: {c.check_name: c for c in scoped.get_checks(i)}["plausible_dates_and_gps"]
                for i in (future, null_island, fine)}
    assert not verdicts[future].passed and "2199" in verdicts[future].detail
    assert not verdicts[null_island].passed and "0,0" in verdicts[null_island].detail
    assert verdicts[fine].passed
    assert catalog.work.images_by_id([future])[future].status == "done"  # a warning, not a failure
