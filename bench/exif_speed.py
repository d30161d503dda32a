"""Benchmark: EXIF read by ExifTool (the reader when installed) against Pillow (the fallback), in one process.

Over the camera files of `../shared/data/exif` and 200 photos of the cats-and-dogs validation set; best
of three passes each. Prints images per second and milliseconds per image.

    .venv/bin/python bench/exif_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imago_pipeline.core.enrichment.decode import InvalidImage, open_image
from imago_pipeline.core.enrichment.exif import exif_from_image, extract_exif
from imago_pipeline.core.enrichment.exiftool import exiftool_version

DATA = REPO.parent / "shared" / "data"


def pillow(data: bytes):
    image = open_image(data, 10**9)
    try:
        return exif_from_image(image)
    finally:
        image.close()


def main() -> None:
    files = [p for p in (DATA / "exif").rglob("*") if p.is_file() and p.suffix.lower() not in (".json", ".md", ".txt",
                                                                                                  ".csv")]
    files += sorted((DATA / "catsdogs").glob("val/*/*.jpg"))[:200]
    payloads = [p.read_bytes() for p in files]
    print(f"ExifTool {exiftool_version() or 'not installed'}; {len(payloads)} files")
    for name, read in (("pillow", pillow), ("exiftool", lambda data: extract_exif(data, max_pixels=10**9))):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for data in payloads:
                try:
                    read(data)
                except InvalidImage:
                    pass
            best = min(best, time.perf_counter() - started)
        print(f"  {name:8s} {len(payloads) / best:7.0f} images/s  {best / len(payloads) * 1000:6.2f} ms each")


if __name__ == "__main__":
    main()
