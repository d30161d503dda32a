"""A synthetic Parquet lake at production scale, with the real lake's layout and schemas.

Every per-image table (`exif`, `thumbnail`, `ocr`, `classification`, `vision`, `images`) for N images of
several tenants uploaded over a year, plus the `inference_log` and `feedback` snapshots. Files are laid out
as the pipeline writes them: `<table>/tenant_id=<t>/date=<upload day>/part-<run>.parquet`, one file per
(tenant, day) a run touches, runs over consecutive image ids. Duplicates exist as in production: a
classifier promotion reclassifies the oldest images in ranged runs (a newer `classification` row each), and
users reprocess single images now and then (a newer row in every per-image table, in files of their own).
Distributions are plausible rather than real: a few phone makes dominate, 2-3% of images fail, a quarter
carries text, mostly English and French.

    .venv/bin/python bench/synthetic_lake.py /tmp/lake [--images 1000000] [--tenants 8] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imago_pipeline.core.stores.lake_tables import LAKE_TABLES

DAY_US = 86_400 * 1_000_000
START_US = int(np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64))
CAMERAS = [  # (make, model, share, width, height, lens)
    ("Apple", "iPhone 15 Pro", 0.14, 4032, 3024, "iPhone 15 Pro back triple camera 6.86mm f/1.78"),
    ("Apple", "iPhone 14", 0.11, 4032, 3024, "iPhone 14 back dual wide camera 5.7mm f/1.5"),
    ("Apple", "iPhone 13", 0.08, 4032, 3024, "iPhone 13 back dual wide camera 5.1mm f/1.6"),
    ("Apple", "iPhone 12", 0.05, 4032, 3024, "iPhone 12 back dual wide camera 4.2mm f/1.6"),
    ("samsung", "SM-S911B", 0.09, 4000, 3000, None),
    ("samsung", "SM-A536B", 0.06, 4000, 3000, None),
    ("Google", "Pixel 8", 0.06, 4080, 3072, None),
    ("Google", "Pixel 7a", 0.03, 4080, 3072, None),
    ("Xiaomi", "2201117TG", 0.03, 4000, 3000, None),
    ("HUAWEI", "ELS-NX9", 0.02, 3648, 2736, None),
    ("Canon", "Canon EOS R6", 0.025, 5472, 3648, "RF24-105mm F4 L IS USM"),
    ("Canon", "Canon EOS 5D Mark IV", 0.015, 6720, 4480, "EF24-70mm f/2.8L II USM"),
    ("NIKON CORPORATION", "NIKON Z 6_2", 0.02, 6048, 4024, "NIKKOR Z 24-70mm f/4 S"),
    ("NIKON CORPORATION", "NIKON D750", 0.01, 6016, 4016, "24.0-120.0 mm f/4.0"),
    ("SONY", "ILCE-7M3", 0.02, 6000, 4000, "FE 28-70mm F3.5-5.6 OSS"),
    ("FUJIFILM", "X-T4", 0.01, 6240, 4160, "XF18-55mmF2.8-4 R LM OIS"),
    ("OLYMPUS CORPORATION", "E-M10MarkIII", 0.005, 4608, 3456, None),
    ("DJI", "FC3582", 0.005, 4032, 3024, None),
    (None, None, 0.29, 1920, 1080, None),  # screenshots, scans, edited exports: no camera
]
MEDIA_TYPES = (["image/jpeg", "image/heic", "image/png", "image/webp", "image/tiff"], [0.72, 0.14, 0.09, 0.04, 0.01])
LANGUAGES = (["en", "fr", "de", "es", "it", "nl", None], [0.52, 0.27, 0.08, 0.06, 0.03, 0.02, 0.02])
TAGS = np.array(["landscape", "portrait", "bright", "dark", "black", "white", "gray", "brown", "green", "blue",
                 "red", "text", "english", "french", "geotagged", "apple", "samsung", "canon", "nikon", "cat",
                 "dog", "night", "outdoor", "document"])
TAG_ARRAY = pa.array(TAGS.tolist(), type=pa.string())
MODEL_V1, MODEL_V2 = "v1-3f9c2a71", "v2-8d41e0b5"
ERRORS = ["InvalidImage: cannot identify image file", "DecompressionBomb: image too large",
          "Timeout: prediction took longer than 10 s"]


def choose(rng: np.random.Generator, values: list, weights: list[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p / p.sum())]


def timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.tolist(), type=pa.string())


class Uploads:
    """Image ids 1..N in upload order: tenant, upload time, and the ranged runs that processed them."""

    def __init__(self, rng: np.random.Generator, images: int, tenants: int, days: int, batch_size: int):
        self.n = images
        self.ids = np.arange(1, images + 1, dtype=np.int64)
        # traffic grows over the year and dips at weekends
        day = np.sort(rng.triangular(0, days, days, size=images)).astype(np.int64)
        weekday_keep = np.where((day + 2) % 7 >= 5, 0.6, 1.0)  # 2025-01-01 is a Wednesday
        day = np.where(rng.random(images) < weekday_keep, day, np.maximum(day - 2, 0))
        day.sort()
        self.created_us = START_US + day * DAY_US + rng.integers(0, DAY_US, size=images)
        self.created_us.sort()
        weights = 1 / np.arange(1, tenants + 1) ** 1.1  # one big tenant, a long tail
        self.tenant = rng.choice(np.arange(1, tenants + 1), size=images, p=weights / weights.sum())
        self.batch = (self.ids - 1) // batch_size  # a run per batch of consecutive ids
        self.run_ids = [uuid.UUID(int=int(x)).hex for x in rng.integers(0, 2**63, size=self.batch.max() + 2)]
        self.processed_us = self.created_us + rng.integers(5_000_000, 900_000_000, size=images)


def per_image_tables(rng: np.random.Generator, up: Uploads, select: np.ndarray, at_us: np.ndarray,
                     model_version: np.ndarray) -> dict[str, pa.Table]:
    """One row per selected image in every per-image table, stamped `at_us` (the run's time)."""
    n = select.size
    camera = rng.choice(len(CAMERAS), size=n, p=np.array([c[2] for c in CAMERAS]) / sum(c[2] for c in CAMERAS))
    make = np.array([c[0] for c in CAMERAS], dtype=object)[camera]
    model = np.array([c[1] for c in CAMERAS], dtype=object)[camera]
    lens = np.array([c[5] for c in CAMERAS], dtype=object)[camera]
    width = np.array([c[3] for c in CAMERAS])[camera]
    height = np.array([c[4] for c in CAMERAS])[camera]
    portrait = rng.random(n) < 0.35
    width, height = np.where(portrait, height, width), np.where(portrait, width, height)
    has_camera = make != None  # noqa: E711 (elementwise)
    media = choose(rng, *MEDIA_TYPES, n)
    status = np.where(rng.random(n) < 0.975, "done", "failed").astype(object)
    error_stage = np.where(status == "failed", choose(rng, ["thumbnail", "ocr", "exif", "vision"],
                                                      [0.5, 0.3, 0.1, 0.1], n), None)
    byte_size = np.clip(rng.lognormal(np.log(2_400_000), 0.7, n), 20_000, 50_000_000).astype(np.int64)
    taken_us = up.created_us[select] - rng.exponential(20 * DAY_US, n).astype(np.int64)
    taken = np.datetime_as_string(taken_us.astype("datetime64[us]"), unit="s")
    gps = has_camera & (rng.random(n) < 0.45)
    lat = np.where(gps, rng.uniform(36, 55, n), np.nan)
    lon = np.where(gps, rng.uniform(-9, 20, n), np.nan)
    f_number = rng.choice([1.6, 1.8, 2.2, 2.8, 4.0, 5.6, 8.0], n)
    exposure = 1 / rng.choice([30, 60, 120, 250, 500, 1000, 2000], n)
    iso = rng.choice([50, 100, 200, 400, 800, 1600, 3200], n)
    focal = np.round(rng.uniform(4, 70, n), 1)

    def null_f(values: np.ndarray) -> pa.Array:  # NULL where the image has no camera EXIF
        return pa.array(np.where(has_camera, values, np.nan), type=pa.float64(), from_pandas=True)

    def null_i(values: np.ndarray) -> pa.Array:
        return pa.array(np.where(has_camera, values, 0), type=pa.int64(), mask=~has_camera)

    ids = pa.array(up.ids[select])
    stamp = timestamps(at_us)

    exif_ok = ~((status == "failed") & (error_stage == "exif"))
    exif = pa.table({
        "image_id": ids, "make": strings(make), "model": strings(model), "lens_model": strings(lens),
        "datetime_original": pa.array(np.where(has_camera, taken, None).tolist(), type=pa.string()),
        "exposure_time": null_f(exposure), "f_number": null_f(f_number), "iso": null_i(iso),
        "focal_length_mm": null_f(focal), "focal_length_35mm": null_i((focal * 6).astype(np.int64)),
        "orientation": null_i(np.where(portrait, 6, 1)), "width": null_i(width), "height": null_i(height),
        "gps_latitude": pa.array(lat, from_pandas=True), "gps_longitude": pa.array(lon, from_pandas=True),
        "gps_altitude": pa.array(np.where(gps, rng.uniform(0, 900, n), np.nan), from_pandas=True),
        "software": strings(np.where(has_camera & (make == "Apple"), "17.4.1", None)),
        "extracted_at": stamp,
    }).filter(pa.array(exif_ok))

    thumb_ok = ~((status == "failed") & (error_stage == "thumbnail"))
    scale = 256 / np.maximum(width, height)
    thumbnail = pa.table({
        "image_id": ids, "width": pa.array((width * scale).astype(np.int64)),
        "height": pa.array((height * scale).astype(np.int64)),
        "byte_size": pa.array(rng.integers(6_000, 40_000, n)), "created_at": stamp,
    }).filter(pa.array(thumb_ok))

    ocr_ok = ~((status == "failed") & (error_stage == "ocr"))
    has_text = rng.random(n) < np.where(has_camera, 0.12, 0.55)
    language = np.where(has_text, choose(rng, *LANGUAGES, n), None)
    words = np.where(has_text, rng.integers(3, 600, n), 0)
    ocr = pa.table({
        "image_id": ids, "has_text": pa.array(has_text),
        "confidence": pa.array(np.where(has_text, np.clip(rng.normal(84, 9, n), 5, 99), np.nan), from_pandas=True),
        "language": strings(language),
        "mode": strings(np.where(has_text, choose(rng, ["page", "line"], [0.8, 0.2], n), "probe")),
        "rotation": pa.array(np.where(has_text & (rng.random(n) < 0.05), 90, 0)),
        "engine": strings(np.where(has_text & (rng.random(n) < 0.03), "gemini", "tesseract")),
        "word_count": pa.array(words), "text_length": pa.array(words * rng.integers(5, 7, n)),
        "created_at": stamp,
    }).filter(pa.array(ocr_ok))

    dog = rng.random(n) < 0.47
    classification = pa.table({
        "image_id": ids, "label": strings(np.where(dog, "dog", "cat")),
        "probability": pa.array(np.clip(rng.beta(8, 2, n), 0.5, 1.0)),
        "model_version": strings(model_version), "created_at": stamp,
    })

    tag_count = rng.integers(3, 7, n)
    picks = rng.integers(0, TAGS.size, (n, 6))
    offsets = np.concatenate([[0], np.cumsum(tag_count)]).astype(np.int32)
    flat = picks[np.arange(6)[None, :] < tag_count[:, None]]
    vision_ok = thumb_ok & ~((status == "failed") & (error_stage == "vision"))
    vision = pa.table({
        "image_id": ids, "tags": pa.ListArray.from_arrays(pa.array(offsets), TAG_ARRAY.take(pa.array(flat))),
        "confidence": pa.array(np.round(rng.uniform(0.4, 0.95, n), 2)),
        "model_used": strings(np.full(n, "local-heuristics-v1", dtype=object)), "created_at": stamp,
    }).filter(pa.array(vision_ok))

    sha = os.urandom(32 * n).hex()
    images = pa.table({
        "image_id": ids, "sha256": pa.array([sha[i * 64:(i + 1) * 64] for i in range(n)]),
        "media_type": strings(media), "byte_size": pa.array(byte_size),
        "width": pa.array(width), "height": pa.array(height), "status": strings(status),
        "error_stage": strings(error_stage), "created_at": timestamps(up.created_us[select]),
        "processed_at": stamp,
    })
    return {"exif": exif, "thumbnail": thumbnail, "ocr": ocr, "classification": classification,
            "vision": vision, "images": images}


def add_partitions(table: pa.Table, up: Uploads, runs: np.ndarray, run_of_image: np.ndarray) -> pa.Table:
    """Attach tenant, upload day and run to each row (from its image), for the file layout."""
    index = table.column("image_id").to_numpy() - 1
    day = (up.created_us[index] - START_US) // DAY_US
    return table.append_column("__tenant", pa.array(up.tenant[index])) \
        .append_column("__day", pa.array(day)).append_column("__run", pa.array(runs[run_of_image[index]]))


def write_layout(job: tuple[Path, str, pa.Table, list[str]]) -> int:
    """One file per (run, tenant, day) of the rows, named as the lake names them."""
    root, name, table, run_ids = job
    tenant = table.column("__tenant").to_numpy()
    day = table.column("__day").to_numpy()
    run = table.column("__run").to_numpy()
    order = np.lexsort((day, tenant, run))
    tenant, day, run = tenant[order], day[order], run[order]
    data = table.take(pa.array(order))
    schema = LAKE_TABLES[name].schema
    if "run_id" in schema.names:  # the run's id in every row, as the pipeline writes it
        data = data.append_column("run_id", pa.array(np.asarray(run_ids, dtype=object)[run], type=pa.string()))
    data = data.select(schema.names).cast(schema)
    cuts = np.flatnonzero((np.diff(tenant) != 0) | (np.diff(day) != 0) | (np.diff(run) != 0)) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(order)]])
    made = set()
    for start, end in zip(starts, ends):
        folder = (root / name / f"tenant_id={tenant[start]}" /
                  f"date={np.datetime64(START_US + int(day[start]) * DAY_US, 'us').astype('datetime64[D]')}")
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        pq.write_table(data.slice(start, end - start), folder / f"part-{run_ids[run[start]]}.parquet",
                       compression="zstd")
    return len(starts)


def monitoring_tables(rng: np.random.Generator, up: Uploads, inferences: int, feedback: int) -> dict[str, pa.Table]:
    promotion_us = up.created_us[int(up.n * 0.8)]
    at = np.sort(rng.uniform(START_US, up.created_us[-1], inferences)).astype(np.int64)
    version = np.where(at < promotion_us, MODEL_V1, MODEL_V2).astype(object)
    success = rng.random(inferences) < np.where(version == MODEL_V1, 0.985, 0.992)
    latency = rng.lognormal(np.log(np.where(version == MODEL_V1, 48.0, 41.0)), 0.35, inferences)
    inference_log = pa.table({
        "id": pa.array(np.arange(1, inferences + 1)), "success": pa.array(success),
        "error": strings(np.where(success, None, choose(rng, ERRORS, [0.6, 0.1, 0.3], inferences))),
        "latency_ms": pa.array(np.round(latency, 2)), "model_version": strings(version),
        "label": strings(np.where(success, np.where(rng.random(inferences) < 0.47, "dog", "cat"), None)),
        "created_at": timestamps(at),
        "__tenant": pa.array(np.where(rng.random(inferences) < 0.1, 0,  # predictions without a tenant
                                      rng.integers(1, up.tenant.max() + 1, inferences))),
    })
    image = rng.choice(up.ids, size=feedback, replace=False)
    fb_at = up.processed_us[image - 1] + rng.exponential(3 * DAY_US, feedback).astype(np.int64)
    fb_version = np.where(up.processed_us[image - 1] < promotion_us, MODEL_V1, MODEL_V2).astype(object)
    correct = rng.random(feedback) < np.where(fb_version == MODEL_V1, 0.86, 0.91)
    predicted = np.where(rng.random(feedback) < 0.47, "dog", "cat").astype(object)
    truth = np.where(correct, predicted, np.where(predicted == "dog", "cat", "dog"))
    order = np.argsort(fb_at)
    feedback_table = pa.table({
        "id": pa.array(np.arange(1, feedback + 1)), "image_id": pa.array(image[order]),
        "correct": pa.array(correct[order]),
        "label": strings(np.where(rng.random(feedback) < 0.7, truth, None)[order]),
        "predicted_label": strings(predicted[order]), "model_version": strings(fb_version[order]),
        "used_in_version": strings(np.where((fb_version == MODEL_V1) & (rng.random(feedback) < 0.5), MODEL_V2,
                                            None)[order]),
        "created_at": timestamps(fb_at[order]), "__tenant": pa.array(up.tenant[image[order] - 1]),
    })
    return {"inference_log": inference_log, "feedback": feedback_table}


def write_snapshot(root: Path, name: str, table: pa.Table) -> int:
    """Snapshots: one `part-snapshot.parquet` per (tenant, day), as `Lake.replace_table` writes them."""
    at = table.column("created_at").cast(pa.int64()).to_numpy()
    day = (at - START_US) // DAY_US
    table = table.append_column("__day", pa.array(day)).append_column("__run", pa.array(np.zeros(len(day), np.int64)))
    return write_layout((root, name, table, ["snapshot"]))


def generate(root: Path, images: int, tenants: int, days: int, batch_size: int, reclassified: float,
             reprocessed: float, seed: int, workers: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    up = Uploads(rng, images, tenants, days, batch_size)
    everyone = np.arange(images)
    first = per_image_tables(rng, up, everyone, up.processed_us,
                             np.where(everyone < images * 0.8, MODEL_V1, MODEL_V2).astype(object))
    n_batches = int(up.batch.max()) + 1
    runs = np.arange(n_batches + 10_000)  # run index per batch, later runs after the ingest runs
    run_ids = up.run_ids + [uuid.UUID(int=int(x)).hex for x in rng.integers(0, 2**63, size=10_000)]
    parts = {name: [add_partitions(table, up, runs, up.batch)] for name, table in first.items()}

    # a promotion reclassifies the oldest images, in ranged runs of `batch_size`
    promoted_at = up.processed_us[int(images * 0.8)]
    old = everyone[: int(images * reclassified)]
    rerun = per_image_tables(rng, up, old, promoted_at + old * 40_000, np.full(old.size, MODEL_V2, dtype=object))
    parts["classification"].append(add_partitions(rerun["classification"], up, runs,
                                                  np.full(images, n_batches) + everyone // batch_size))
    # users reprocess single images now and then: every stage again, small runs of a few images
    chosen = np.sort(rng.choice(everyone, size=int(images * reprocessed), replace=False))
    later = np.minimum(up.processed_us[chosen] + rng.exponential(30 * DAY_US, chosen.size).astype(np.int64),
                       up.processed_us[-1] + DAY_US)
    version = np.where(later < promoted_at, MODEL_V1, MODEL_V2).astype(object)
    again = per_image_tables(rng, up, chosen, later, version)
    run_of = np.zeros(images, np.int64)
    run_of[chosen] = n_batches + int(images * reclassified) // batch_size + 1 + np.arange(chosen.size) // 5
    for name, table in again.items():
        parts[name].append(add_partitions(table, up, runs, run_of))

    if root.exists():
        shutil.rmtree(root)
    jobs = [(root, name, pa.concat_tables(tables), run_ids) for name, tables in parts.items()]
    with ProcessPoolExecutor(workers) as pool:
        files = dict(zip(parts, pool.map(write_layout, jobs)))
    snapshots = monitoring_tables(rng, up, inferences=max(1, images // 5), feedback=max(1, images // 50))
    for name, table in snapshots.items():
        files[name] = write_snapshot(root, name, table)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="lake root to (re)create")
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch-size", type=int, default=1000, help="images per ingest run (IMAGO_BATCH_SIZE)")
    parser.add_argument("--reclassified", type=float, default=0.2, help="share of images a promotion reclassified")
    parser.add_argument("--reprocessed", type=float, default=0.01, help="share of images reprocessed one by one")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()
    files = generate(args.out.resolve(), args.images, args.tenants, args.days, args.batch_size, args.reclassified,
                     args.reprocessed, args.seed, args.workers)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in args.out.rglob("*.parquet"))
    print(f"{args.images:,} images, {sum(files.values()):,} files "
          f"({', '.join(f'{k} {v:,}' for k, v in files.items())}), {size / 2**20:,.0f} MiB in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
