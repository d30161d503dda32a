"""Lake compaction on real Parquet files and DuckDB: the views answer the same before and after, only new
files are folded, readers that listed files before a compaction still read them, erasure reaches the
compacted files, a re-run batch is not hidden, and the lock keeps erasure and compaction apart. Every test
runs on a lake in a folder and on a lake in S3 (a real S3 server: moto), read by DuckDB through the
registered filesystem."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest

from imago_pipeline.core.analytics.analytics import open_analytics
from imago_pipeline.core.analytics.compaction import Manifest, compact_lake, compact_table, tail_files
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_files import S3LakeFiles, file_lock
from imago_pipeline.core.stores.lake_tables import CLASSIFICATION, EXIF, IMAGES

T0 = datetime(2026, 9, 1, tzinfo=UTC)


def _classify(lake: Lake, batch: str, images: list[tuple[int, int, date]], label: str, at: datetime) -> None:
    rows = [{"image_id": i, "tenant_id": tenant, "date": day, "label": label, "probability": 0.9,
             "model_version": batch, "created_at": at, "run_id": batch} for i, tenant, day in images]
    lake.write_batch("classification", rows, batch_id=batch, schema=CLASSIFICATION.schema)


def _view(root, table="classification", order="image_id"):
    con = open_analytics(root)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        con.close()


@pytest.fixture(params=["folder", "s3"])
def new_lake(request, tmp_path):
    """A function making an empty lake: in a folder, or under a prefix of a fresh bucket on S3."""
    if request.param == "folder":
        return lambda: Lake(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    return lambda: Lake(S3LakeFiles(bucket, "lake", endpoint_url=endpoint, access_key="test", secret_key="test",
                                    lock=file_lock(tmp_path / "locks")))


@pytest.fixture
def lake(new_lake):
    lake = new_lake()
    sept, octo = date(2026, 9, 3), date(2026, 10, 7)
    first = [(i, 1 + i % 2, sept if i < 60 else octo) for i in range(1, 101)]
    _classify(lake, "b1", first, "cat", T0)
    _classify(lake, "b2", first[:30], "dog", T0 + timedelta(days=1))  # reclassified after a promotion
    _classify(lake, "b3", first[10:20], "other", T0 + timedelta(days=2))  # and some again
    lake.write_batch("exif", [{"image_id": i, "tenant_id": t, "date": d, "make": "Canon",
                               "extracted_at": T0, "run_id": "e1"} for i, t, d in first],
                     batch_id="e1", schema=EXIF.schema)
    return lake


def test_views_answer_the_same_before_and_after_and_only_new_files_are_folded(lake):
    before = _view(lake)
    assert len(before) == 100 and {r[0] for r in before} == {1, 2}  # tenant ids
    reports = {r.table: r for r in compact_lake(lake)}

    assert reports["classification"].tail_files == 4 + 2 + 2 and reports["classification"].months == 4
    assert reports["classification"].rows == 100 and reports["exif"].rows == 100
    assert reports["thumbnail"].tail_files == 0  # a table nobody wrote: nothing to do
    assert _view(lake) == before
    assert _view(lake, "exif") and len(_view(lake, "exif")) == 100
    manifest = Manifest.load(lake.files, "classification")
    assert len(manifest.compacted) == 4 and not tail_files(lake.files, "classification", manifest)
    labels = {r[2]: r[3] for r in _view(lake)}
    assert labels[5] == "dog" and labels[15] == "other" and labels[50] == "cat"

    # incremental: one new batch touching one tenant-month is all the next run folds
    _classify(lake, "b4", [(15, 2, date(2026, 9, 3)), (101, 2, date(2026, 9, 20))], "dog", T0 + timedelta(days=3))
    expected = _view(lake)  # read from the compacted files plus the tail
    assert {r[2]: r[3] for r in expected}[15] == "dog" and len(expected) == 101
    again = compact_table(lake, CLASSIFICATION)
    assert (again.tail_files, again.months) == (2, 1)  # two day files of one tenant-month
    assert _view(lake) == expected
    assert compact_table(lake, CLASSIFICATION).tail_files == 0  # nothing new: nothing done


def test_a_reader_that_listed_files_before_a_compaction_still_reads_them(lake):
    con = open_analytics(lake)  # its views hold the file lists of this moment
    before = con.execute("SELECT count(*), count(DISTINCT image_id) FROM classification").fetchone()
    compact_lake(lake)
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM classification").fetchone() == before
    # past the grace period a later run deletes the folded files; new readers never needed them
    assert compact_table(lake, CLASSIFICATION, grace_seconds=0).deleted_files == 8
    _classify(lake, "b5", [(7, 2, date(2026, 9, 3))], "cat", T0 + timedelta(days=5))
    assert compact_table(lake, CLASSIFICATION, grace_seconds=0).tail_files == 1
    # the next run deletes what that one folded and the compacted file it replaced
    assert compact_table(lake, CLASSIFICATION, grace_seconds=0).deleted_files == 2
    assert not lake.files.glob("classification/*/date=*/part-b1.parquet")
    con.close()
    rows = _view(lake)
    assert len(rows) == 100 and {r[2]: r[3] for r in rows}[7] == "cat"


def test_erasure_reaches_compacted_files_and_a_rerun_batch_is_not_hidden(lake):
    compact_lake(lake)
    assert lake.delete_rows("classification", "image_id", [15, 16]) >= 2
    assert {15, 16}.isdisjoint({r[2] for r in _view(lake)})
    for path in lake.files.glob("classification/**/*.parquet"):
        assert {15, 16}.isdisjoint(lake.files.read_table(path).column("image_id").to_pylist()), path
    # a retried run rewrites its own (already folded) file: the new rows are read, then folded
    _classify(lake, "b1", [(40, 1, date(2026, 9, 3))], "other", T0 + timedelta(days=9))
    assert {r[2]: r[3] for r in _view(lake)}[40] == "other"
    compact_table(lake, CLASSIFICATION)
    assert {r[2]: r[3] for r in _view(lake)}[40] == "other"


def test_compaction_waits_for_an_erasure_holding_the_table(lake):
    held, released = threading.Event(), threading.Event()

    def erasure():
        with lake.lock("classification"):
            held.set()
            released.wait(5)

    thread = threading.Thread(target=erasure)
    thread.start()
    held.wait(5)
    started = time.perf_counter()
    timer = threading.Timer(0.5, released.set)
    timer.start()
    compact_table(lake, CLASSIFICATION)
    assert time.perf_counter() - started >= 0.45  # it waited for the lock
    thread.join()


def test_a_table_read_by_newest_of_two_columns_compacts_the_same(new_lake):
    lake = new_lake()
    for batch, status, processed in (("a", "failed", T0), ("b", "done", T0 + timedelta(hours=1))):
        lake.write_batch("images", [{"image_id": i, "tenant_id": 1, "date": date(2026, 9, 1), "status": status,
                                     "created_at": T0, "processed_at": processed, "run_id": batch}
                                    for i in range(1, 6)], batch_id=batch, schema=IMAGES.schema)
    before = _view(lake, "images")
    compact_table(lake, IMAGES)
    assert _view(lake, "images") == before and {r[8] for r in before} == {"done"}


def test_snapshot_tables_are_merged_with_every_row_and_a_rewrite_starts_afresh(new_lake):
    from imago_pipeline.core.stores.lake_tables import INFERENCE_LOG

    lake = new_lake()

    def snapshot(count: int) -> None:
        lake.replace_table("inference_log", [
            {"id": i, "tenant_id": 1 + i % 2, "date": date(2026, 9, 1) + timedelta(days=i % 40), "success": True,
             "latency_ms": float(i), "model_version": "v1", "label": "cat", "created_at": T0 + timedelta(days=i % 40)}
            for i in range(count)], schema=INFERENCE_LOG.schema)

    snapshot(300)
    before = _view(lake, "inference_log", "id")
    report = compact_table(lake, INFERENCE_LOG)
    assert report.tail_files == 40 and report.months == 4 and report.rows == 300  # a file per tenant and day
    assert _view(lake, "inference_log", "id") == before
    assert lake.delete_before("inference_log", "created_at", T0 + timedelta(days=10)) == 80
    assert len(_view(lake, "inference_log", "id")) == 220
    snapshot(50)  # the monitoring asset rewrites the table whole: its compacted files go with the old one
    assert len(_view(lake, "inference_log", "id")) == 50
    assert compact_table(lake, INFERENCE_LOG).rows == 50 and len(_view(lake, "inference_log", "id")) == 50


def test_a_snapshot_table_rewritten_while_it_is_read_is_never_missing(tmp_path):
    """A thread watches a snapshot table's folder while it is rewritten whole 200 times: the folder is always
    there. The new and the old folders are exchanged in one step; renamed away and then in (as before, and
    still where the file system cannot exchange), a reader could fall between and find no table."""
    from imago_pipeline.core.stores.lake_tables import INFERENCE_LOG

    lake = Lake(tmp_path / "lake")

    def snapshot(count: int) -> None:
        lake.replace_table("inference_log", [
            {"id": i, "tenant_id": 1, "date": date(2026, 9, 1), "success": True, "latency_ms": 1.0,
             "model_version": "v1", "label": "cat", "created_at": T0} for i in range(count)],
            schema=INFERENCE_LOG.schema)

    snapshot(1)
    folder = tmp_path / "lake" / lake.table_path("inference_log")
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not folder.is_dir():
                missing.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(200):
            snapshot(1 + n % 5)
    finally:
        stop.set()
        watcher.join()
    assert not missing, f"the table was missing {len(missing)} times"
    assert len(_view(lake, "inference_log", "id")) == 1 + 199 % 5
    assert sorted(p.name for p in (tmp_path / "lake").iterdir() if p.name.startswith(".inference_log")) == []


def test_an_s3_lakes_lock_is_shared_through_postgres_and_dies_with_its_holder(postgres_admin_url):
    """Machines sharing an S3 lake share no file system: the table lock is a Postgres advisory lock. Another
    process holding it makes us wait; a holder killed with SIGKILL releases it (its connection dies)."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    from imago_pipeline.core.stores.lake_files import postgres_lock

    lock = postgres_lock(postgres_admin_url)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from imago_pipeline.core.stores.lake_files import postgres_lock
        with postgres_lock({postgres_admin_url!r})("s3://bucket/lake/classification"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = threading.Event()

        def take():
            with lock("s3://bucket/lake/classification"):
                got.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not got.wait(1.0)  # held by the other process
        with lock("s3://bucket/lake/exif"):  # another table is free
            pass
        os.kill(holder.pid, signal.SIGKILL)
        assert got.wait(10)  # released when the holder's connection died
        waiter.join(5)
    finally:
        holder.kill()
        holder.wait()


# A purge killed (SIGKILL) as it saves the manifest, after it has gone through every file.
PURGE_AND_DIE_AT_THE_MANIFEST = """
import os, signal, sys
from datetime import datetime
from imago_pipeline.core.stores.lake import Lake, Manifest

Manifest.save = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
Lake(sys.argv[1]).delete_before("inference_log", "created_at", datetime.fromisoformat(sys.argv[2]))
"""


def test_a_purge_killed_before_the_manifest_is_saved_reads_no_row_twice(tmp_path):
    """Folded files used to be rewritten with a new stamp that only the manifest saved at the end made
    "folded" again: killed in between, their kept rows were read twice (and folded twice by the next
    compaction). A folded file is now deleted instead: its rows are all in the compacted file."""
    import subprocess
    import sys

    from imago_pipeline.core.stores.lake_tables import INFERENCE_LOG
    from tests.conftest import REPO

    lake = Lake(tmp_path / "lake")
    cutoff = T0 + timedelta(days=10)
    for batch in range(3):  # each file has rows on both sides of the cutoff
        rows = [{"id": batch * 100 + n, "tenant_id": 1, "date": date(2026, 9, 15), "success": True, "error": None,
                 "latency_ms": 1.0, "model_version": "v1", "label": "cat",
                 "created_at": T0 + timedelta(days=n % 20)} for n in range(40)]
        lake.write_batch("inference_log", rows, batch_id=f"b{batch}", schema=INFERENCE_LOG.schema)
    compact_lake(lake, ["inference_log"])

    def ids(where: str = "true") -> list[int]:
        con = open_analytics(lake)
        try:
            return [r[0] for r in con.execute(f"SELECT id FROM inference_log WHERE {where} ORDER BY id").fetchall()]
        finally:
            con.close()

    kept = ids(f"created_at >= TIMESTAMPTZ '{cutoff.isoformat()}'")
    assert 0 < len(kept) < 120 and ids() == sorted(range(0, 40)) + sorted(range(100, 140)) + sorted(range(200, 240))
    killed = subprocess.run([sys.executable, "-c", PURGE_AND_DIE_AT_THE_MANIFEST, str(tmp_path / "lake"),
                             cutoff.isoformat()], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert ids() == kept  # each kept row once, no expired one
    compact_lake(lake, ["inference_log"])
    assert ids() == kept
