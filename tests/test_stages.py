"""The enrichment stages as core functions, with no orchestrator: a batch of real images through a real
catalog, blob store and lake, the way any adapter (a Dagster asset, a script) calls them."""

from __future__ import annotations

import duckdb

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.enrichment.batch import ImageBatch
from imago_pipeline.core.enrichment.stages import exif, summary, thumbnail
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.parallel import worker_pool
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.core.stores.lake import Lake
from tests.conftest import SAMPLES, shared


def test_exif_and_thumbnail_stages_store_rows_checks_and_lake_files_for_a_batch(catalog: Catalog, settings):
    tenant = catalog.clients.get_or_create("t")
    store, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake_root)
    names = ["Canon_40D.jpg", "iphone_hdr_YES.jpg", "PaintTool_sample.jpg"]
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n,
                          data=(SAMPLES / n).read_bytes()).image.id for n in names]
    bad = register_image(catalog, store, settings, tenant_id=tenant.id, filename="hostile.jpg",
                         data=shared("bad", "pillow__broken_exif_dpi.jpg").read_bytes()).image.id

    def batch(stage: str) -> ImageBatch:
        return ImageBatch(catalog, lake, stage=stage, code_version=f"{stage}-test", image_ids=[*ids, bad, 999_999],
                          run_id="run-1")

    with worker_pool(2) as pool:
        limits = dict(max_pixels=settings.max_pixels, thumbnail_size=64, ocr_languages="eng")
        exif_batch = batch("exif")
        exif_report = exif.run(exif_batch, exif_batch.inputs(store, **limits), pool.map)
        thumb_batch = batch("thumbnail")
        thumb_report = thumbnail.run(thumb_batch, thumb_batch.inputs(store, **limits), pool.map, store)

    # one file for the exif table, one for the place table (the iPhone photo has a position)
    assert exif_report.missing == 1 and len(exif_report.results) == 4 and exif_report.lake_files == 2
    madrid = catalog.for_tenant(tenant.id).get_exif(ids[1])
    assert (madrid.city, madrid.country_code, madrid.timezone, madrid.datetime_utc) == (
        "Moncloa-Aravaca", "ES", "Europe/Madrid", "2015-04-10T18:12:23Z")
    assert catalog.for_tenant(tenant.id).get_exif(ids[0]).country_code is None  # no GPS
    assert exif_report.metrics()["code_version"] == "exif-test"
    gps = {c.image_id: c for c in exif_report.checks[0].outcomes}
    assert exif_report.checks[0].severity == "warn" and gps[ids[1]].passed  # the iPhone's GPS is plausible
    scoped = catalog.for_tenant(tenant.id)
    assert scoped.get_exif(ids[0]).model == "Canon EOS 40D"
    assert thumb_report.checks[0].passed and max(scoped.get_thumbnail(ids[1]).width,
                                                 scoped.get_thumbnail(ids[1]).height) == 64
    assert {s.stage: s.status for s in scoped.get_stages(ids[0])} == {"exif": "done", "thumbnail": "done"}
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{settings.lake_root}/exif/*/*/*.parquet')").fetchone()
    assert rows == (4,)
    # the summary finishes only the stages given: exif and thumbnail are all this pipeline has here
    counts = summary.run(catalog, lake, [*ids, bad], run_id="run-1", claim=None)
    assert counts["images"] == 4


def _photo_dated(date: str, offset: str, lat: float, lon: float) -> bytes:
    """A small JPEG whose EXIF says when (with its clock's offset) and where it was taken."""
    import io

    import piexif
    from PIL import Image

    def dms(value: float) -> tuple:
        return ((int(abs(value)), 1), (0, 1), (0, 1))

    exif = {"Exif": {piexif.ExifIFD.DateTimeOriginal: date.encode(),
                     piexif.ExifIFD.OffsetTimeOriginal: offset.encode()},
            "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S", piexif.GPSIFD.GPSLatitude: dms(lat),
                    piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W", piexif.GPSIFD.GPSLongitude: dms(lon)}}
    out = io.BytesIO()
    Image.new("RGB", (32, 24), "teal").save(out, format="JPEG", exif=piexif.dump(exif))
    return out.getvalue()


def test_a_photo_dated_past_the_calendar_in_utc_fails_no_other_image_of_its_batch(catalog: Catalog, settings):
    """9999-12-31 23:59:59 at UTC-12 is after year 9999 in UTC: converting it raised OverflowError in the
    batch's place lookup, which failed the EXIF stage of every image in the run (each retried, then
    dead-lettered). Now the date is flagged by the plausibility check and the batch completes."""
    tenant = catalog.clients.get_or_create("t")
    store, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake_root)
    uploads = {"canon.jpg": (SAMPLES / "Canon_40D.jpg").read_bytes(),
               "honolulu-9999.jpg": _photo_dated("9999:12:31 23:59:59", "-12:00", 21, -157),
               "honolulu-2020.jpg": _photo_dated("2020:06:01 08:00:00", "-10:00", 21, -157)}
    ids = {name: register_image(catalog, store, settings, tenant_id=tenant.id, filename=name, data=data).image.id
           for name, data in uploads.items()}
    batch = ImageBatch(catalog, lake, stage="exif", code_version="exif-test", image_ids=list(ids.values()),
                       run_id="run-1")
    with worker_pool(1) as pool:
        report = exif.run(batch, batch.inputs(store, max_pixels=settings.max_pixels, thumbnail_size=64,
                                              ocr_languages="eng"), pool.map)

    scoped = catalog.for_tenant(tenant.id)
    assert report.failed == 0
    stages = {name: {s.stage: s.status for s in scoped.get_stages(i)} for name, i in ids.items()}
    assert stages == {name: {"exif": "done"} for name in ids}
    far = scoped.get_exif(ids["honolulu-9999.jpg"])
    assert (far.datetime_original, far.datetime_utc, far.country_code) == ("9999-12-31T23:59:59-12:00", None, "US")
    assert scoped.get_exif(ids["honolulu-2020.jpg"]).datetime_utc == "2020-06-01T18:00:00Z"
    flagged = {c.image_id: c.detail for c in report.checks[0].outcomes if not c.passed}
    assert flagged == {ids["honolulu-9999.jpg"]: "date 9999-12-31T23:59:59-12:00 is outside 1826..today"}


def test_an_image_erased_while_its_batch_writes_the_lake_leaves_no_row_there(catalog, settings):
    """The erasure lands between the batch's look at the catalog and its lake write, after the erasure
    went through the lake: the batch's row for it was left there for good."""
    from imago_pipeline.core.erasure import erase_image

    tenant = catalog.clients.get_or_create("t")
    store, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n,
                          data=(SAMPLES / n).read_bytes()).image.id for n in ("Canon_40D.jpg", "Nikon_D70.jpg")]
    batch = ImageBatch(catalog, lake, stage="exif", code_version="exif-test", image_ids=ids, run_id="run-1")
    write_batch = lake.write_batch

    def erase_first(*args, **kwargs):
        if ids[0] in {r.id for r in catalog.work.images_by_id(ids).values()}:
            erase_image(catalog, store, lake, tenant_id=tenant.id, image_id=ids[0])
        return write_batch(*args, **kwargs)

    lake.write_batch = erase_first
    with worker_pool(1) as pool:
        exif.run(batch, batch.inputs(store, max_pixels=settings.max_pixels, thumbnail_size=64, ocr_languages="eng"),
                 pool.map)
    rows = duckdb.sql(f"SELECT image_id FROM read_parquet('{settings.lake_root}/exif/*/*/*.parquet')").fetchall()
    assert rows == [(ids[1],)]
