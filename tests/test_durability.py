"""Crash durability of what the product writes to a local file system: originals and thumbnails (the blob
store), the embedded catalog (SQLite) and the lake's Parquet files and manifests.

Each test writes onto an ext4 file system of its own (a loop-mounted image, journal commits every 60 s so
nothing depends on timing), then "crashes": the image is copied as it stands while still mounted (what
reached the disk, nothing flushed on the way), and the copy is recovered from its journal as after a reboot.
What a write had returned for must be there, under its name and whole."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from imago_pipeline.core.analytics.analytics import open_analytics
from imago_pipeline.core.analytics.compaction import compact_lake
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore, original_key
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_tables import CLASSIFICATION, FEEDBACK
from tests.conftest import SAMPLES

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/loop-control").exists() or not shutil.which("mkfs.ext4"),
    reason="needs root and loop devices (an ext4 file system of its own to crash)")


@contextlib.contextmanager
def _mounted(image: Path, mount_point: Path, *options: str, recovered: bool = False):
    mount_point.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-o", ",".join(("loop", *options)), str(image), str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if recovered:  # the machine mounts loop devices: a crashed image that will not mount is a failure
            pytest.fail(f"the crashed file system does not mount after recovery: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a loop device here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:  # lazily if still in use (a failed test's open file): never left mounted
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@contextlib.contextmanager
def crashing_disk(tmp_path: Path):
    """Yields a fresh ext4 folder, then a function that crashes it and yields the recovered folder."""
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)

    @contextlib.contextmanager
    def crash_and_recover():
        crashed = tmp_path / "crashed.img"
        subprocess.run(["cp", "--sparse=always", str(image), str(crashed)], check=True)
        recovery = subprocess.run(["e2fsck", "-fy", str(crashed)], capture_output=True, text=True)
        assert recovery.returncode in (0, 1), recovery.stdout + recovery.stderr  # 1: the journal replayed
        with _mounted(crashed, tmp_path / "after", recovered=True) as after:
            yield after

    with _mounted(image, tmp_path / "live", "commit=60") as live:
        yield live, crash_and_recover


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "lost+found" not in p.parts}


def test_a_stored_original_survives_a_crash_under_its_key(tmp_path):
    """The catalog commits the row pointing at a file right after `put` returns. Without the folder synced
    after the rename, the last file survived only as `.tmp-…` (which the orphan sweep then deletes)."""
    keys = {original_key(1, "ab" * 32, "u1"): b"first" * 1000,
            original_key(1, "ab" * 32, "u2"): b"second" * 1000,  # into a folder that exists
            original_key(2, "cd" * 32, "u3"): b"third" * 1000}  # new folders, down from the tenant's
    with crashing_disk(tmp_path) as (live, crash_and_recover):
        store = LocalBlobStore(live)
        for key, data in keys.items():
            store.put(key, data)
        with crash_and_recover() as after:
            assert _files(after) == keys


def test_an_erased_original_stays_erased_after_a_crash(tmp_path):
    """The catalog's row is gone when the erasure deletes the file: a crash must not bring the file back
    (it did, until the orphan sweep came by a day later)."""
    kept, erased = original_key(1, "ab" * 32, "u1"), original_key(1, "ab" * 32, "u2")
    with crashing_disk(tmp_path) as (live, crash_and_recover):
        store = LocalBlobStore(live)
        store.put(kept, b"kept" * 1000)
        store.put(erased, b"erased" * 1000)
        store.delete(erased)
        with crash_and_recover() as after:
            assert _files(after) == {kept: b"kept" * 1000}


def test_an_upload_registered_on_the_embedded_default_survives_a_crash(tmp_path):
    """What a 201 promises, on the embedded default (SQLite catalog, originals in a folder): after a power
    loss right after registration, the image's row is in the catalog and its original under its key. With
    SQLite's `synchronous=NORMAL` in WAL mode, the commit was not synced and the row came back missing."""
    data = sorted(SAMPLES.glob("*.jpg"))[0].read_bytes()
    with crashing_disk(tmp_path) as (live, crash_and_recover):
        catalog = Catalog.connect(f"sqlite:///{live}/catalog.db")
        try:
            tenant = catalog.clients.get_or_create("acme")
            registration = register_image(catalog, LocalBlobStore(live / "blobs"), ImagoSettings(),
                                          tenant_id=tenant.id, filename="photo.jpg", data=data)
            assert registration.created
            with crash_and_recover() as after:
                recovered = Catalog.connect(f"sqlite:///{after}/catalog.db")
                try:
                    image = recovered.for_tenant(tenant.id).get_image(registration.image.id)
                    assert image is not None and image.sha256 == registration.image.sha256
                    assert LocalBlobStore(after / "blobs").get(image.blob_key) == data
                finally:
                    recovered.dispose()
        finally:
            catalog.dispose()  # the file system cannot be unmounted while the database is open


def test_the_lake_survives_a_crash_after_a_batch_and_a_compaction(tmp_path):
    """Batches written, then compacted (a new file published, the manifest rewritten, the old files
    retired): after the crash the view answers what it answered before it."""
    rows = lambda batch, ids, label: [  # noqa: E731
        {"image_id": i, "tenant_id": 1, "date": date(2026, 9, 1 + i % 3), "label": label, "probability": 0.9,
         "model_version": batch, "created_at": datetime(2026, 9, 5, tzinfo=UTC), "run_id": batch} for i in ids]

    def view(root: Path) -> list[tuple]:
        con = open_analytics(Lake(root))
        try:
            return con.execute("SELECT image_id, label FROM classification ORDER BY image_id").fetchall()
        finally:
            con.close()

    with crashing_disk(tmp_path) as (live, crash_and_recover):
        lake = Lake(live / "lake")
        lake.write_batch("classification", rows("b1", range(1, 41), "cat"), batch_id="b1",
                         schema=CLASSIFICATION.schema)
        compact_lake(lake)
        lake.write_batch("classification", rows("b2", range(30, 51), "dog"), batch_id="b2",
                         schema=CLASSIFICATION.schema)
        expected = view(live / "lake")
        assert len(expected) == 50 and dict(expected)[35] == "dog"
        with crash_and_recover() as after:
            assert view(after / "lake") == expected


def test_a_snapshot_table_rewritten_or_emptied_stays_so_after_a_crash(tmp_path):
    """`feedback` rewritten whole (swapped folders), then emptied (every row purged): after the crash the
    table is empty and no copy of its old rows is left on disk."""
    def feedback(ids):
        return [{"id": i, "image_id": i, "correct": True, "label": "cat", "predicted_label": "cat",
                 "model_version": "v1", "used_in_version": None, "tenant_id": 1, "date": date(2026, 9, 1),
                 "created_at": datetime(2026, 9, 1, tzinfo=UTC)} for i in ids]

    with crashing_disk(tmp_path) as (live, crash_and_recover):
        lake = Lake(live / "lake")
        lake.replace_table(FEEDBACK.name, feedback(range(1, 11)), schema=FEEDBACK.schema)
        lake.replace_table(FEEDBACK.name, feedback(range(1, 4)), schema=FEEDBACK.schema)
        with crash_and_recover() as after:
            assert _feedback_ids(after / "lake") == [1, 2, 3]
        lake.replace_table(FEEDBACK.name, [], schema=FEEDBACK.schema)
        with crash_and_recover() as after:
            assert _feedback_ids(after / "lake") == []
            assert not [p for p in (after / "lake").rglob("*.parquet") if "feedback" in p.as_posix()]


def _feedback_ids(root: Path) -> list[int]:
    files = sorted(p for p in root.rglob("*.parquet") if "feedback" in p.as_posix() and not
                   any(part.startswith(".") for part in p.relative_to(root).parts))
    return sorted(i for f in files for i in pq.read_table(f, partitioning=None).column("id").to_pylist())
