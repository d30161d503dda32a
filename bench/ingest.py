"""Benchmark: images per hour through the real pipeline vs the same functions in a plain loop.

Pipeline: `imago ingest` (validation on every core, catalog, blob store, Dagster partitions, ranged runs,
lake files), in a fresh IMAGO_HOME. Plain loop: the same per-image functions (validate, EXIF, thumbnail,
OCR, embedding, classification head, local vision) over a process pool with one process per core (each
with its own one-thread encoder) and nothing else. The target is a ratio of
90% or better
on 500+ images. Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--data ../shared/data] [--limit 1500] [--batch-size 250]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.embedding.encoder import Encoder, pixels
from imago_pipeline.core.embedding.head import Head
from imago_pipeline.core.enrichment.decode import sniff_media_type
from imago_pipeline.core.enrichment.exif import extract_exif
from imago_pipeline.core.enrichment.ocr import ocr_image
from imago_pipeline.core.enrichment.thumbnail import make_thumbnail
from imago_pipeline.core.ingest import check_upload
from imago_pipeline.core.vision.base import VisionContext
from imago_pipeline.core.vision.local import LocalVisionProvider


def collect(data: Path, limit: int) -> list[Path]:
    files = []
    for path in sorted(data.rglob("*")):
        if path.is_file() and "bad" not in path.relative_to(data).parts[:1]:
            with path.open("rb") as handle:
                if sniff_media_type(handle.read(16)):
                    files.append(path)
    return files[:limit]


_models: list = []


def plain_one(path: Path) -> bool:
    """Every stage's per-image function, nothing else: validate, EXIF, thumbnail, OCR, embedding, head,
    local vision."""
    from training.registry import BASELINE

    if not _models:
        _models.extend([Encoder(threads=1), Head.load(BASELINE.model)])
    encoder, head = _models
    settings = ImagoSettings()
    data = path.read_bytes()
    try:
        check_upload(data, settings)
        exif = extract_exif(data, max_pixels=settings.max_pixels)
        thumb = make_thumbnail(data, size=settings.thumbnail_size, max_pixels=settings.max_pixels)
        ocr = ocr_image(data, languages=settings.ocr_languages, max_pixels=settings.max_pixels)
        embedding = encoder.encode(pixels(data, max_pixels=settings.max_pixels)[None])[0]
        label = head.predict(np.asarray(embedding.vector)[None])[0]
        LocalVisionProvider().describe(VisionContext(
            image_jpeg=thumb.jpeg, width=thumb.width, height=thumb.height, exif=exif.to_dict(),
            ocr_text=ocr.text, ocr_language=ocr.language, has_text=ocr.has_text,
            classification={"label": label.label, "probability": label.probability}, imagenet=embedding.imagenet))
        return True
    except Exception:
        return False


def plain_loop(files: list[Path], workers: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        ok = sum(pool.map(plain_one, files, chunksize=4))
    elapsed = time.perf_counter() - started
    print(f"plain loop: {len(files)} images ({ok} ok) in {elapsed:.1f} s with {workers} processes")
    return elapsed


def pipeline(files: list[Path], batch_size: int) -> float:
    home = Path(tempfile.mkdtemp(prefix="imago-bench-"))
    folder = home / "input"
    folder.mkdir()
    for index, path in enumerate(files):
        os.symlink(path.resolve(), folder / f"{index:06d}{path.suffix.lower()}")
    env = {**os.environ, "IMAGO_HOME": str(home / "imago"), "IMAGO_BATCH_SIZE": str(batch_size)}
    env.pop("DAGSTER_HOME", None)
    env.pop("IMAGO_DATABASE_URL", None)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "imago_pipeline", "ingest", str(folder)], env=env, cwd=REPO,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    print(f"pipeline:   {summary}")
    shutil.rmtree(home, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    files = collect(args.data, args.limit)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(files)} images ({megabytes:.0f} MB) from {args.data}, {args.workers} cores, "
          f"batch size {args.batch_size}")
    plain_loop(files[:20], args.workers)  # warm the page cache so neither side pays for cold reads
    plain = plain_loop(files, args.workers)
    piped = pipeline(files, args.batch_size)
    plain_rate, piped_rate = len(files) / plain * 3600, len(files) / piped * 3600
    print(f"\nplain loop  {plain_rate:>10,.0f} images/hour")
    print(f"pipeline    {piped_rate:>10,.0f} images/hour (end to end, including Python and Dagster start-up)")
    print(f"ratio       {piped_rate / plain_rate:>10.0%}  (target: 90% or better)")


if __name__ == "__main__":
    main()
