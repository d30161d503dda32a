"""Benchmark: what one processed image costs in each store, and how many images a core processes per hour.

`imago ingest` of `--limit` real photos (the cats-and-dogs validation set) into a fresh home whose catalog
is a scratch database on a Postgres server, every stage on, then: the catalog's bytes per image (each
table with its indexes and TOAST, after `VACUUM ANALYZE`), the originals and thumbnails in the blob folder,
the lake (before and after compaction) and Dagster's storage (the embedded SQLite event log `imago ingest`
writes), each divided by the number of images; and the ingest's images per second and per core. These are
the per-image figures `docs/scaling.md` multiplies for its sizing.

    .venv/bin/python bench/storage_per_image.py [--limit 400] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text

from tests import postgres


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=400, help="photos to ingest")
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "catsdogs")
    args = parser.parse_args()

    photos = sorted(args.data.glob("*/*/*.jpg"))[:args.limit]
    work = Path(tempfile.mkdtemp(prefix="imago-sizing-"))
    name = f"imago_sizing_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(args.postgres, name)
    try:
        folder = work / "photos"
        folder.mkdir()
        for i, photo in enumerate(photos):
            shutil.copy(photo, folder / f"{i:05d}-{photo.name}")
        home = work / "home"
        env = {**os.environ, "IMAGO_HOME": str(home), "IMAGO_DATABASE_URL": url, "IMAGO_LOG_FORMAT": "text"}
        env.pop("DAGSTER_HOME", None)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imago_pipeline", "ingest", str(folder), "--nice", "0",
                        "--batch-size", "100"], env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        engine = create_engine(url)
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count(*) FROM images WHERE status = 'done'")).scalar_one()
            connection.commit()
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            tables = connection.execute(text(
                "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                "ORDER BY 2 DESC")).all()
        engine.dispose()
        lake_before = folder_bytes(home / "lake")
        subprocess.run([sys.executable, "-m", "imago_pipeline", "compact", "--grace", "0"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "imago_pipeline", "compact", "--grace", "0"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # the second run deletes what the first folded
        cores = os.cpu_count() or 1
        print(f"{count} of {len(photos)} photos done in {seconds:.1f} s: {count / seconds:.2f} images/s on "
              f"{cores} cores, {count / seconds / cores * 3600:,.0f} images per core-hour (imago ingest, "
              "every stage, batches of 100, the first run's start included)")
        print("bytes per image:")
        catalog = sum(size for _, size in tables)
        print(f"  catalog (Postgres, indexes included) {catalog / count:10,.0f}")
        for table, size in tables[:8]:
            print(f"    {table:22s} {size / count:10,.0f}")
        blobs = home / "blobs" / "tenants"
        originals = sum(folder_bytes(p) for p in blobs.glob("*/originals"))
        thumbnails = sum(folder_bytes(p) for p in blobs.glob("*/thumbnails"))
        print(f"  originals              {originals / count:10,.0f}")
        print(f"  thumbnails             {thumbnails / count:10,.0f}")
        print(f"  lake, batch files      {lake_before / count:10,.0f}")
        print(f"  lake, compacted        {folder_bytes(home / 'lake') / count:10,.0f}")
        print(f"  Dagster (SQLite)       {folder_bytes(home / 'dagster') / count:10,.0f}")
    finally:
        postgres.drop_database(args.postgres, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
