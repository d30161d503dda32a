"""OCR accuracy and speed on ../shared/data/ocr (pages and lines) and ../shared/data/ocr-photos (sign photos):
our routed `ocr` ("ours") against each engine alone through our code ("tesseract", "rapidocr") and as it
comes ("plain tesseract": the `tesseract` command, `--psm 11` on photos; "plain rapidocr": RapidOCR's
defaults). Then photos without text (../shared/data/catsdogs/val: pets): how many come out with text, and
how fast, routed and with Tesseract alone. Every reader runs on one thread, one image per core.

    .venv/bin/python bench/ocr_accuracy.py [--data ../shared/data/ocr] [--photos ../shared/data/ocr-photos]
                                           [--no-text ../shared/data/catsdogs/val] [--details]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imago_pipeline.core.enrichment.ocr_eval import (
    READERS,
    evaluate,
    load_photo_samples,
    load_samples,
    photos_without_text,
    summarise,
)

HEADERS = {"ours": "ours", "tesseract": "tesseract", "rapidocr": "rapidocr", "plain": "plain tesseract",
           "plain_rapidocr": "plain rapidocr"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ocr")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "ocr-photos")
    parser.add_argument("--no-text", type=Path, default=REPO.parent / "shared" / "data" / "catsdogs" / "val")
    parser.add_argument("--details", action="store_true")
    args = parser.parse_args()
    scores = evaluate(load_samples(args.data) + load_photo_samples(args.photos), readers=READERS)
    names = [HEADERS[r] for r in READERS]
    print("| set | images | metric | " + " | ".join(names) + " | " + " | ".join(f"{n} s/image" for n in names) + " |")
    print("| --- | ---: | --- | " + " | ".join("---:" for _ in range(2 * len(names))) + " |")
    for subset, row in summarise(scores).items():
        print(f"| {subset} | {row['images']} | {row['metric']} | "
              + " | ".join(f"{row[r]:.4f}" for r in READERS) + " | "
              + " | ".join(f"{row[r + '_s']:.2f}" for r in READERS) + " |")
    if args.details:
        for score in scores:
            print(f"{score.sample.image.name:50} " + "  ".join(f"{r} {score.metric[r]:.3f}" for r in READERS))

    pets = sorted(args.no_text.rglob("*.jpg"))
    readings = photos_without_text(pets)
    print(f"\nPhotos without text ({args.no_text}, {len(pets)} photos):\n")
    print("| reader | with text | s/image mean | median | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for reader in ("ours", "tesseract"):
        mine = [r for r in readings if r.reader == reader]
        seconds = [r.seconds for r in mine]
        print(f"| {HEADERS[reader]} | {sum(r.has_text for r in mine)} | {statistics.fmean(seconds):.3f} | "
              f"{statistics.median(seconds):.3f} | {max(seconds):.3f} |")
    if args.details:
        for reading in readings:
            if reading.has_text:
                print(f"{reading.reader:10} {reading.image.parent.name}/{reading.image.name}: {reading.text!r}")


if __name__ == "__main__":
    main()
