"""Drops (a folder, an S3 prefix) never lose or block a file: one replaced while it is registered is left
for the next look (never archived unregistered), one gone is skipped, a name taken or too long is filed
under a unique one, and a symbolic link is refused, not followed. On a real folder and a real S3 server
(moto)."""

from __future__ import annotations

import os
import time

from imago_pipeline.core.ingest import ingest_drops
from imago_pipeline.core.stores.blobs import LocalBlobStore, build_blob_store, s3_client
from imago_pipeline.core.stores.drops import FolderDrop, S3Drop
from tests.conftest import SAMPLES

CANON, NIKON, IPHONE = ((SAMPLES / n).read_bytes() for n in ("Canon_40D.jpg", "Nikon_D70.jpg", "iphone_hdr_YES.jpg"))


def _settled(folder, names: dict[str, bytes]) -> None:
    for name, data in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (time.time() - 60, time.time() - 60))  # settled


def _registered(catalog, settings) -> dict[str, int]:
    tenant = catalog.clients.get_or_create(settings.default_tenant)
    images, _ = catalog.for_tenant(tenant.id).list_images(_no_filters(), limit=100, offset=0)
    return {image.sha256: image.id for image in images}


def _no_filters():
    from imago_pipeline.core.catalog import ImageFilters

    return ImageFilters()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_names_taken_or_too_long_and_a_file_where_a_folder_was_never_block_the_folder(catalog, settings, tmp_path):
    """Before: a 250-byte name dropped twice in a day (its archive name grew past 255 bytes) and a file
    `album` then a folder `album/` failed every look of the sensor, and the files after them waited for ever."""
    drop, store = FolderDrop(tmp_path / "drop"), LocalBlobStore(settings.blob_root)
    long_name = "x" * 246 + ".jpg"
    _settled(drop.root, {long_name: CANON, "album": NIKON})
    assert ingest_drops(drop, catalog, store, settings).registered == 2
    _settled(drop.root, {long_name: IPHONE, "album/one.jpg": (SAMPLES / "PaintTool_sample.jpg").read_bytes(),
                         "zzz.jpg": b"not an image at all"})
    report = ingest_drops(drop, catalog, store, settings)
    assert (report.registered, report.rejected) == (2, 1)
    assert [p for p in drop.root.rglob("*") if p.is_file() and ".imported" not in p.parts
            and ".rejected" not in p.parts] == []  # everything filed
    imported = [p for p in (drop.root / ".imported").rglob("*") if p.is_file()]
    assert len(imported) == 4 and all(len(p.name.encode()) <= 255 for p in imported)
    assert {_sha(p.read_bytes()) for p in imported} <= set(_registered(catalog, settings))
    reasons = list((drop.root / ".rejected").rglob("*.reason.txt"))
    assert len(reasons) == 1 and "zzz" in reasons[0].name


def test_a_file_replaced_while_registered_is_not_archived_and_its_new_content_comes_next(catalog, settings,
                                                                                          tmp_path):
    """Before: the file was moved by name after its old content was registered: the new content went to
    `.imported/` and never into the catalog."""
    store = LocalBlobStore(settings.blob_root)

    class ReplacedAfterRead(FolderDrop):
        def read(self, item):
            data = super().read(item)
            if item.key == "photo.jpg" and data == CANON:  # someone drops a new version over it, atomically
                (self.root / "new.tmp").write_bytes(NIKON)
                os.utime(self.root / "new.tmp", (time.time() - 60, time.time() - 60))
                os.rename(self.root / "new.tmp", self.root / "photo.jpg")
            return data

    drop = ReplacedAfterRead(tmp_path / "drop")
    _settled(drop.root, {"photo.jpg": CANON, "other.jpg": IPHONE})
    assert ingest_drops(drop, catalog, store, settings).registered == 1  # other.jpg; photo.jpg waits
    assert (drop.root / "photo.jpg").read_bytes() == NIKON
    assert ingest_drops(drop, catalog, store, settings).registered == 1
    assert {_sha(CANON), _sha(NIKON), _sha(IPHONE)} <= set(_registered(catalog, settings))
    assert not (drop.root / "photo.jpg").exists()


def test_a_symbolic_link_is_refused_not_followed_and_a_vanished_file_is_skipped(catalog, settings, tmp_path):
    drop, store = FolderDrop(tmp_path / "drop"), LocalBlobStore(settings.blob_root)
    outside = tmp_path / "elsewhere" / "secret.jpg"
    _settled(outside.parent, {"secret.jpg": CANON})
    _settled(drop.root, {"gone.jpg": NIKON, "kept.jpg": IPHONE})
    (drop.root / "link.jpg").symlink_to(outside)
    (drop.root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    for link in ("link.jpg", "dangling.jpg"):
        os.utime(drop.root / link, (time.time() - 60, time.time() - 60), follow_symlinks=False)
    listed = drop.pending(100)
    (drop.root / "gone.jpg").unlink()  # removed between the listing and its read
    drop.pending = lambda limit: listed
    report = ingest_drops(drop, catalog, store, settings)
    assert (report.registered, report.rejected) == (1, 2)
    assert set(_registered(catalog, settings)) == {_sha(IPHONE)}  # not the linked file
    reasons = sorted(p.read_text() for p in (drop.root / ".rejected").rglob("*.reason.txt"))
    assert reasons == ["a symbolic link: the drop folder takes files, not links\n"] * 2
    assert outside.read_bytes() == CANON  # untouched


def test_s3_drops_keep_both_archives_of_a_name_and_leave_a_replaced_object_for_the_next_look(
        catalog, s3_settings):
    """Before: the second object of a name in a day overwrote the first one's archive (and a rejected one's
    reason), and an object replaced while registered was archived with its new content unregistered."""
    settings, store = s3_settings, build_blob_store(s3_settings)
    client = s3_client(endpoint_url=settings.s3_endpoint_url, region="us-east-1",
                       access_key_id=settings.s3_access_key_id,
                       secret_access_key=settings.s3_secret_access_key.get_secret_value())
    bucket = settings.s3_bucket

    class ReplacedAfterRead(S3Drop):
        def read(self, item):
            data = super().read(item)
            if item.key == "photo.jpg" and data == CANON:
                client.put_object(Bucket=bucket, Key="drop/photo.jpg", Body=NIKON)
            return data

    drop = ReplacedAfterRead(client, f"s3://{bucket}/drop")
    client.put_object(Bucket=bucket, Key="drop/scan.jpg", Body=b"not an image, first")
    client.put_object(Bucket=bucket, Key="drop/photo.jpg", Body=CANON)
    first = ingest_drops(drop, catalog, store, settings)  # photo.jpg's first version is registered, not filed
    assert (first.registered, first.rejected) == (0, 1)
    client.put_object(Bucket=bucket, Key="drop/scan.jpg", Body=b"not an image, second")
    report = ingest_drops(drop, catalog, store, settings)  # the new photo.jpg, and the second scan.jpg
    assert (report.registered, report.rejected) == (1, 1)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="drop/")["Contents"]]
    assert [k for k in keys if not k.startswith("drop/.")] == []
    rejected = sorted(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys
                      if k.startswith("drop/.rejected/") and not k.endswith(".reason.txt"))
    assert rejected == [b"not an image, first", b"not an image, second"]
    assert sum(k.endswith(".reason.txt") for k in keys) == 2
    assert set(_registered(catalog, settings)) == {_sha(CANON), _sha(NIKON)}  # both versions, once each
    assert ingest_drops(drop, catalog, store, settings).registered == 0


def test_imago_ingest_stores_only_the_bytes_it_checked_and_refuses_big_files_unread(catalog, settings, tmp_path,
                                                                                      monkeypatch):
    """Before: a file changed between its check (in a worker) and its registration was stored unchecked
    under the checked file's hash and size, a file removed meanwhile ended the whole ingest, a file over the
    limit was read whole into memory first, and an empty file counted as 'not an image'."""
    from rich.progress import Progress

    import imago_pipeline.core.parallel as parallel
    from imago_pipeline.cli.ingest import _register_folder

    folder = tmp_path / "photos"
    _settled(folder, {"a.jpg": CANON, "b.jpg": NIKON, "c.jpg": IPHONE, "empty.jpg": b""})
    with (folder / "big.jpg").open("wb") as big:  # sparse: over the limit without using the disk
        big.write(b"\xff\xd8\xff\xe0")
        big.truncate(settings.max_upload_bytes + 1)

    def checked_then_changed(fn, jobs, workers, on_crash=None):
        for job in jobs:
            result = fn(job)
            if job[0].name == "b.jpg":
                job[0].write_bytes(b"not an image at all")
            elif job[0].name == "c.jpg":
                job[0].unlink()
            yield result

    monkeypatch.setattr(parallel, "map_in_processes", checked_then_changed)
    _, tenant, report = _register_folder(folder, "t", settings, Progress(disable=True), "proc:test")
    assert [path.name for path, _ in report.registered] == ["a.jpg"]
    reasons = {path.name: reason for path, reason in report.rejected}
    assert reasons["b.jpg"] == "changed while it was being ingested; run again to take it"
    assert reasons["c.jpg"].startswith("unreadable") and reasons["empty.jpg"] == "empty file"
    assert reasons["big.jpg"] == f"{settings.max_upload_bytes + 1} bytes is over the limit of " \
                                 f"{settings.max_upload_bytes} bytes"
    images, _ = catalog.for_tenant(tenant.id).list_images(_no_filters(), limit=10, offset=0)
    assert [image.sha256 for image in images] == [_sha(CANON)]
