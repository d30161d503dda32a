"""Every table of the Parquet lake in one registry: its name, its columns, and how readers pick a row.

Writers (the enrichment stages, the monitoring snapshot) write with these schemas, the SQL sources read
them as views, and erasure and retention reach each of them. The lake holds measurements, not content:
no file names, no OCR text, no descriptions (those live in the catalog, where erasure and retention
reach them row by row).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from imago_pipeline.core.enrichment.exif import EXIF_FIELDS

_TS = pa.timestamp("us", tz="UTC")
_EXIF_FLOATS = {"exposure_time", "f_number", "focal_length_mm", "gps_latitude", "gps_longitude", "gps_altitude"}
_EXIF_INTS = {"iso", "focal_length_35mm", "orientation", "width", "height"}


@dataclass(frozen=True)
class LakeTable:
    """A lake table. Per-image tables are append-only per batch, so readers keep the newest row per image
    (ordered by `newest_first`); snapshot tables (no `newest_first`) are rewritten whole and read as they are."""

    name: str
    schema: pa.Schema
    newest_first: tuple[str, ...] = ()

    @property
    def per_image(self) -> bool:
        return bool(self.newest_first)


def _exif_type(name: str) -> pa.DataType:
    return pa.float64() if name in _EXIF_FLOATS else pa.int64() if name in _EXIF_INTS else pa.string()


EXIF = LakeTable("exif", pa.schema(
    [("image_id", pa.int64())] + [(name, _exif_type(name)) for name in EXIF_FIELDS]
    + [("extracted_at", _TS), ("run_id", pa.string())]), ("extracted_at",))
PLACE = LakeTable("place", pa.schema([  # where and when (UTC) a photo was taken, from its GPS and clock
    ("image_id", pa.int64()), ("city", pa.string()), ("admin1", pa.string()), ("country_code", pa.string()),
    ("timezone", pa.string()), ("datetime_utc", _TS), ("extracted_at", _TS), ("run_id", pa.string())]),
    ("extracted_at",))
THUMBNAIL = LakeTable("thumbnail", pa.schema([
    ("image_id", pa.int64()), ("width", pa.int64()), ("height", pa.int64()), ("byte_size", pa.int64()),
    ("created_at", _TS), ("run_id", pa.string())]), ("created_at",))
OCR = LakeTable("ocr", pa.schema([  # no text: the lake holds measurements, the catalog holds content
    ("image_id", pa.int64()), ("has_text", pa.bool_()), ("confidence", pa.float64()), ("language", pa.string()),
    ("mode", pa.string()), ("rotation", pa.int64()), ("engine", pa.string()), ("word_count", pa.int64()),
    ("text_length", pa.int64()), ("created_at", _TS), ("run_id", pa.string())]), ("created_at",))
EMBEDDING = LakeTable("embedding", pa.schema([  # the vector (DuckDB reads it as FLOAT[1280]) and the top class
    ("image_id", pa.int64()), ("vector", pa.list_(pa.float32(), 1280)), ("imagenet_top1", pa.string()),
    ("imagenet_top1_probability", pa.float64()), ("model", pa.string()), ("created_at", _TS),
    ("run_id", pa.string())]), ("created_at",))
CLASSIFICATION = LakeTable("classification", pa.schema([
    ("image_id", pa.int64()), ("label", pa.string()), ("probability", pa.float64()),
    ("model_version", pa.string()), ("created_at", _TS), ("run_id", pa.string())]), ("created_at",))
VISION = LakeTable("vision", pa.schema([  # tags and model, not the description
    ("image_id", pa.int64()), ("tags", pa.list_(pa.string())), ("confidence", pa.float64()),
    ("model_used", pa.string()), ("created_at", _TS), ("run_id", pa.string())]), ("created_at",))
IMAGES = LakeTable("images", pa.schema([  # no file name
    ("image_id", pa.int64()), ("sha256", pa.string()), ("media_type", pa.string()), ("byte_size", pa.int64()),
    ("width", pa.int64()), ("height", pa.int64()), ("status", pa.string()), ("error_stage", pa.string()),
    ("created_at", _TS), ("processed_at", _TS), ("run_id", pa.string())]), ("processed_at", "created_at"))
INFERENCE_LOG = LakeTable("inference_log", pa.schema([
    ("id", pa.int64()), ("success", pa.bool_()), ("error", pa.string()), ("latency_ms", pa.float64()),
    ("model_version", pa.string()), ("label", pa.string()), ("created_at", _TS)]))
FEEDBACK = LakeTable("feedback", pa.schema([
    ("id", pa.int64()), ("image_id", pa.int64()), ("correct", pa.bool_()), ("label", pa.string()),
    ("predicted_label", pa.string()), ("model_version", pa.string()), ("used_in_version", pa.string()),
    ("created_at", _TS)]))

LAKE_TABLES: dict[str, LakeTable] = {t.name: t for t in (
    EXIF, PLACE, THUMBNAIL, OCR, EMBEDDING, CLASSIFICATION, VISION, IMAGES, INFERENCE_LOG, FEEDBACK)}
