"""What each piece of an upload's registration costs alone, in one process: the content checks, the hash,
the durable blob write, and the catalog statements of a batch (on Postgres, a fresh database on the local
server, unless `--sqlite`). Wall and CPU time (user, system) per upload, over real photos.

Why: `bench/api_load.py` measures the whole under 20 concurrent clients, where every piece shares two cores
with the load; this says what the pieces cost before any contention, i.e. how far the upload path could
shrink.

    .venv/bin/python bench/upload_parts.py [--images 200] [--batch 10] [--sqlite]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.tenant import register_uploads
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import _new_upload, check_upload
from imago_pipeline.core.stores.blobs import LocalBlobStore


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def timed(label: str, work, count: int) -> None:
    user, system = _cpu()
    began = time.perf_counter()
    work()
    wall = time.perf_counter() - began
    user_after, system_after = _cpu()
    print(f"  {label:48s} wall {1000 * wall / count:6.3f}  user {1000 * (user_after - user) / count:6.3f}  "
          f"system {1000 * (system_after - system) / count:6.3f}")


class _NoWrite:
    def put(self, key: str, data: bytes) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10, help="uploads per catalog transaction")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    paths = sorted((REPO.parent / "shared" / "data" / "catsdogs").glob("*/*/*.jpg"))[: 2 * args.images]
    if len(paths) < 2 * args.images:
        raise SystemExit(f"only {len(paths)} photos")
    files = [p.read_bytes() for p in paths]
    work = Path(tempfile.mkdtemp(prefix="imago-upload-parts-"))
    settings = ImagoSettings(home=work / "imago")
    cleanup = []
    try:
        if args.sqlite:
            url = settings.catalog_url
        else:
            from tests import postgres

            admin = os.environ.get("IMAGO_BENCH_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
            name = f"imago_upload_parts_{uuid.uuid4().hex[:8]}"
            url = postgres.create_database(admin, name)
            cleanup.append(lambda: postgres.drop_database(admin, name))
        catalog = Catalog.connect(url)
        tenant = catalog.clients.create("bench")
        first, second = files[: args.images], files[args.images:]
        n = args.images
        print(f"{n} real photos ({sum(map(len, first)) // n:,} bytes on average), per upload, ms; catalog on "
              f"{'SQLite' if args.sqlite else 'Postgres'}")
        timed("checks (magic bytes, pixel cap, 1/8 decode)", lambda: [check_upload(d, settings) for d in first], n)
        timed("SHA-256", lambda: [hashlib.sha256(d).hexdigest() for d in first], n)
        store = LocalBlobStore(work / "blobs")
        timed("blob written durably (write, fsync, rename)", lambda: [
            store.put(f"tenants/1/originals/{i % 256:02x}/{uuid.uuid4().hex}", d) for i, d in enumerate(first)], n)
        checked = [check_upload(d, settings) for d in second]
        uploads = [_new_upload(_NoWrite(), c, tenant_id=tenant.id, filename="photo.jpg", data=d, status="pending",
                               quota_bytes=10**12) for c, d in zip(checked, second, strict=True)]
        timed(f"catalog statements and commit, batches of {args.batch}", lambda: [
            register_uploads(catalog, uploads[i:i + args.batch]) for i in range(0, n, args.batch)], n)
        catalog.engine.dispose()
    finally:
        for undo in cleanup:
            undo()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
