"""Near-duplicate detection and similar-image search, measured on real images and copies of them.

Prints (asserts nothing):
- for copies of the same picture (re-encoded as JPEG at quality 75/40/20, PNG, resized to ½ and ¼, cropped,
  mirrored, greyed): the cosine similarity of the embeddings and the correlation of the 64×64 fingerprints,
  and whether the duplicate rule (fingerprint ≥ 0.99 and cosine ≥ 0.6) calls them duplicates;
- for every pair of different images: how many the rule calls duplicates (false duplicates), and the pairs
  of look-alikes the embedding alone would confuse;
- how long `duplicate_groups` takes over all images, and one similar-image search.

    .venv/bin/python bench/similarity.py [--data ../shared/data] [--limit 2500] [--details]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
from PIL import Image, ImageOps

from imago_pipeline.core.embedding.encoder import Encoder, pixels
from imago_pipeline.core.embedding.similarity import (
    DUPLICATE_MIN_COSINE,
    DUPLICATE_THRESHOLD,
    duplicate_groups,
    duplicate_pairs,
    most_similar,
    unit_rows,
)

SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic"}
# the same picture more than once in the data (one photo in eight orientations, with and without HDR, …)
SAME_PICTURE = ("orientation/", "/hdr/", "Canon_40D", "exif.png", "exif_imagemagick_orientation.png",
                "hopper_orientation", "Canon_PowerShot_S40.jpg", "flower.webp", "phototest")


def variants(data: bytes) -> dict[str, bytes]:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = image.size
    out: dict[str, bytes] = {}

    def save(name, im, fmt="JPEG", **options):
        buffer = io.BytesIO()
        im.save(buffer, fmt, **options)
        out[name] = buffer.getvalue()

    for quality in (75, 40, 20):
        save(f"jpeg q{quality}", image, quality=quality)
    save("png", image, "PNG")
    save("resized 1/2", image.resize((w // 2, h // 2), Image.Resampling.LANCZOS), quality=85)
    save("resized 1/4", image.resize((max(1, w // 4), max(1, h // 4)), Image.Resampling.LANCZOS), quality=85)
    save("cropped 90%", image.crop((w // 20, h // 20, w - w // 20, h - h // 20)), quality=85)
    save("mirrored", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), quality=85)
    save("grey", image.convert("L"), quality=85)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=2500)
    parser.add_argument("--details", action="store_true")
    args = parser.parse_args()
    paths = [p for p in sorted(args.data.rglob("*")) + sorted((REPO / "training" / "data").rglob("*"))
             if p.suffix.lower() in SUFFIXES and "bad" not in p.relative_to(p.anchor).parts][: args.limit]
    encoder = Encoder()
    kept, found, skipped = [], [], 0
    for path in paths:
        try:
            found += encoder.encode(pixels(path.read_bytes())[None])
            kept.append(path)
        except Exception:  # an undecodable test file
            skipped += 1
    vectors = np.stack([f.vector for f in found])
    prints = np.stack([f.fingerprint for f in found])
    print(f"{len(kept)} images ({skipped} undecodable skipped); rule: fingerprint correlation >= "
          f"{DUPLICATE_THRESHOLD} and cosine >= {DUPLICATE_MIN_COSINE}")

    big = [i for i, p in enumerate(kept) if min(Image.open(p).size) >= 300][::4]
    rows: dict[str, list[tuple[float, float, bool]]] = {}
    unit = unit_rows(vectors)
    for i in big:
        for name, data in variants(kept[i].read_bytes()).items():
            copy = encoder.encode(pixels(data)[None])[0]
            pair = duplicate_pairs(np.stack([vectors[i], copy.vector]), np.stack([prints[i], copy.fingerprint]))
            fine = prints[i].astype(np.float32).ravel(), copy.fingerprint.astype(np.float32).ravel()
            a, b = (x - x.mean() for x in fine)
            correlation = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
            cosine = float(unit[i] @ unit_rows(copy.vector[None])[0])
            rows.setdefault(name, []).append((cosine, correlation, bool(pair)))
    print(f"\ncopies of {len(big)} photos (shorter side >= 300 px):")
    print(f"{'copy':14s} {'cosine min / median':>22s} {'fingerprint min / median':>26s} {'called duplicate':>18s}")
    for name, values in rows.items():
        cos, cor, dup = zip(*values)
        print(f"{name:14s} {min(cos):>10.3f} / {np.median(cos):.3f} {min(cor):>14.4f} / {np.median(cor):.4f} "
              f"{sum(dup):>10d}/{len(dup)}")

    started = time.perf_counter()
    pairs = duplicate_pairs(vectors, prints)
    seconds = time.perf_counter() - started
    names = [p.as_posix() for p in kept]
    same = [(i, j) for i, j, _ in pairs if any(m in names[i] for m in SAME_PICTURE) and
            any(m in names[j] for m in SAME_PICTURE)]
    print(f"\n{len(kept) * (len(kept) - 1) // 2:,} pairs of images in the data: {len(pairs)} called duplicates, "
          f"{len(same)} of them the same picture stored twice in the data, {len(pairs) - len(same)} others")
    for i, j, score in pairs:
        if (i, j) not in same or args.details:
            print(f"  {score:.4f}  {names[i]}  {names[j]}")
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -1)
    print(f"pairs of different images with embedding cosine >= 0.95 (what the embedding alone would call "
          f"duplicates): {int((np.triu(cosine, 1) >= 0.95).sum())}")
    started = time.perf_counter()
    groups = duplicate_groups(list(range(len(kept))), vectors, prints)
    print(f"duplicate_groups over {len(kept)} images: {time.perf_counter() - started:.2f} s "
          f"(pairs alone {seconds:.2f} s), {len(groups)} groups")
    started = time.perf_counter()
    most_similar(vectors[0], list(range(len(kept))), vectors, limit=10)
    print(f"one similar-image search over {len(kept)} embeddings: {(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
