"""Write `train.csv` and `validation.csv`: the labelled sets the baseline head is trained and gated on.

    .venv/bin/python training/sets/build_sets.py [--shared ../shared/data]

Cats and dogs come from `catsdogs/train` and `catsdogs/val` as they are split there. `other` (neither a cat
nor a dog) comes from the shared EXIF and OCR samples and from the permissively licensed photos, drawings,
screenshots, charts and documents in `training/data/other` (sources and licences in `training/data/SOURCE.md`);
the licensed pet photos of `training/data/pets` (pets small in busy scenes) are validation only. Whole folders go to one
side, so near-copies (one photo in eight orientations, lines of one page) never straddle the split, and
everything `make demo` shows (`samples/`) is in validation: the model has never seen it.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"}

# Shared folders (relative to the shared data) whose `other` images are validation only; the rest train.
VALIDATION_FOLDERS = {
    "ocr-photos", "exif/exif-samples/jpg/hdr", "exif/exif-samples/jpg/gps", "exif/pillow", "ocr/tesseract-test",
    "ocr/uw3-lines",
}
# Single shared files that are validation only (the demo's samples and copies of them).
VALIDATION_FILES = {
    "exif/exif-samples/jpg/Canon_40D.jpg", "exif/exif-samples/jpg/Canon_40D_photoshop_import.jpg",
    "exif/exif-samples/jpg/Nikon_D70.jpg", "exif/exif-samples/jpg/Nikon_COOLPIX_P1.jpg",
    "exif/exif-samples/jpg/PaintTool_sample.jpg",
}
OTHER_SHARED = ("exif", "ocr", "ocr-photos")


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def rows(shared: Path, extra: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    train, validation = [], []
    for label in ("cat", "dog"):
        train += [(label, p) for p in images(shared / "catsdogs" / "train" / label)]
        validation += [(label, p) for p in images(shared / "catsdogs" / "val" / label)]
    for top in OTHER_SHARED:
        for path in images(shared / top):
            relative = path.relative_to(shared).as_posix()
            held = relative in VALIDATION_FILES or any(relative.startswith(f + "/") for f in VALIDATION_FOLDERS)
            (validation if held else train).append(("other", path))
    # training/data/other/<source>/{train,validation}/…: the split was made when the images were gathered
    for path in images(extra / "other"):
        side = path.relative_to(extra / "other").parts[1]
        (validation if side == "validation" else train).append(("other", path))
    # training/data/pets/{cat,dog}/…: pets small in busy scenes, validation only
    for label in ("cat", "dog"):
        validation += [(label, p) for p in images(extra / "pets" / label)]
    return train, validation


def write(path: Path, items: list[tuple[str, Path]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["label", "path"])
        for label, file in items:
            writer.writerow([label, os.path.relpath(file, path.parent)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--extra", type=Path, default=REPO / "training" / "data")
    args = parser.parse_args()
    train, validation = rows(args.shared.resolve(), args.extra.resolve())
    write(HERE / "train.csv", train)
    write(HERE / "validation.csv", validation)
    for name, items in (("train", train), ("validation", validation)):
        counts = {label: sum(1 for lb, _ in items if lb == label) for label in ("cat", "dog", "other")}
        print(f"{name}: {len(items)} images {counts}")


if __name__ == "__main__":
    main()
