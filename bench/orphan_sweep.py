"""Benchmark: the daily sweep of stored files no row points at (`sweep_orphan_blobs`), at scale.

Builds a fresh catalog (SQLite, or a scratch database on `--postgres URL`) holding N images of one tenant
(rows inserted in bulk, keys as the product makes them), their originals and thumbnails as small files in
a local blob folder, and N/10 orphans of each kind (originals no row points at, thumbnails of erased
images). Every file is made two days old, and the images table analyzed (as autovacuum would have: without
statistics, Postgres scanned the table for each lookup, 3× slower). Then it times a dry run and the real
sweep, and checks that exactly the orphans went.

    .venv/bin/python bench/orphan_sweep.py [--images 100000] [--postgres postgresql+psycopg2://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert, text

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.orphan_blobs import sweep_orphan_blobs
from imago_pipeline.core.stores.blobs import LocalBlobStore, original_key, thumbnail_key

TWO_DAYS = 2 * 86400


def build(catalog: Catalog, store: LocalBlobStore, n: int) -> int:
    """N images with their files, and N/10 orphans of each kind; returns the number of orphans."""
    tenant = catalog.clients.get_or_create("bench")
    rows = []
    for i in range(n):
        sha, image_uuid = hashlib.sha256(f"bench-{i}".encode()).hexdigest(), str(uuid.uuid4())
        rows.append({"tenant_id": tenant.id, "sha256": sha, "uuid": image_uuid, "original_name": f"{i}.jpg",
                     "media_type": "image/jpeg", "byte_size": 10, "width": 1, "height": 1, "status": "done",
                     "blob_key": original_key(tenant.id, sha, image_uuid)})
    with catalog.session() as session:
        for start in range(0, n, 10_000):
            session.execute(insert(Image), rows[start:start + 10_000])
        session.commit()
        ids = [row[0] for row in session.execute(text("SELECT id FROM images ORDER BY id"))]
    with catalog.engine.connect() as connection:  # as autovacuum would have: the planner's statistics
        connection.execute(text("ANALYZE images"))
        connection.commit()
    for row, image_id in zip(rows, ids, strict=True):
        store.put(row["blob_key"], b"original")
        store.put(thumbnail_key(tenant.id, image_id), b"thumb")
    orphans = n // 10
    for i in range(orphans):
        sha = hashlib.sha256(f"orphan-{i}".encode()).hexdigest()
        store.put(original_key(tenant.id, sha, str(uuid.uuid4())), b"orphan")
        store.put(thumbnail_key(tenant.id, ids[-1] + 1 + i), b"late")
    old = time.time() - TWO_DAYS
    for folder, _, names in os.walk(store.root):
        for name in names:
            os.utime(os.path.join(folder, name), (old, old))
    return 2 * orphans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--postgres", help="an admin URL: a scratch database is made on that server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imago-sweep-"))
    scratch = f"imago_sweep_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT") if args.postgres else None
    try:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f"CREATE DATABASE {scratch}"))
            url = args.postgres.rsplit("/", 1)[0] + f"/{scratch}"
        else:
            url = f"sqlite:///{work / 'catalog.db'}"
        catalog = Catalog.connect(url)
        store = LocalBlobStore(work / "blobs")
        began = time.perf_counter()
        orphans = build(catalog, store, args.images)
        print(f"{args.images:,} images ({2 * args.images:,} files) and {orphans:,} orphans on "
              f"{'Postgres' if admin is not None else 'SQLite'}, built in {time.perf_counter() - began:.0f} s")
        for dry_run in (True, False):
            began = time.perf_counter()
            # force: 20,000 orphans in 220,000 files is over the share the sweep deletes unasked (5%)
            report = sweep_orphan_blobs(catalog, store, dry_run=dry_run, force=True)
            took = time.perf_counter() - began
            print(f"  {'dry run' if dry_run else 'sweep  '}  {report.scanned:,} files in {took:.1f} s "
                  f"({report.scanned / took:,.0f} files/s): {report.orphans:,} orphans, {report.deleted:,} deleted")
            if report.orphans != orphans:
                raise SystemExit(f"expected {orphans} orphans, found {report.orphans}")
        left = sum(len(names) for _, _, names in os.walk(store.root))
        if left != 2 * args.images:
            raise SystemExit(f"{left} files left, expected {2 * args.images}")
        catalog.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
            admin.dispose()


if __name__ == "__main__":
    main()
