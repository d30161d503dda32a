"""EXIF stage: camera metadata into the catalog's `exif` table and the lake, with the place and time zone
its GPS position names (looked up once for the batch, in this process); dates and GPS checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from imago_pipeline.core.catalog import CheckOutcome
from imago_pipeline.core.catalog.models import Exif, utcnow
from imago_pipeline.core.enrichment.batch import ImageBatch, Mapper, StageInput, StageReport, run_one, worker_crashed
from imago_pipeline.core.enrichment.exif import ExifRecord, extract_exif
from imago_pipeline.core.enrichment.places import place_fields
from imago_pipeline.core.stores import lake_tables

CHECK = "plausible_dates_and_gps"
CHECK_DESCRIPTION = "Dates between 1826 and today; GPS on the globe and not 0,0"


def read(item: StageInput) -> ExifRecord:
    return extract_exif(item.store.get(item.blob_key), max_pixels=item.max_pixels)


def work(item: StageInput):
    return run_one(item, read)


def plausibility(record: dict[str, Any], now: datetime) -> str | None:
    """Why an EXIF record looks wrong, or None. Dates before 1826 (the first photograph) or in the future
    and coordinates off the globe or exactly at 0,0 (a common default) are implausible."""
    taken = record.get("datetime_original")
    if taken:
        try:
            when = datetime.fromisoformat(taken)
        except ValueError:
            return f"unparseable date {taken!r}"
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when.year < 1826 or when > now + timedelta(days=1):
            return f"date {taken} is outside 1826..today"
    lat, lon = record.get("gps_latitude"), record.get("gps_longitude")
    if (lat is None) != (lon is None):
        return "only one GPS coordinate"
    if lat is not None and lon is not None and (abs(lat) > 90 or abs(lon) > 180):
        return f"GPS {lat},{lon} is off the globe"
    if lat == 0 and lon == 0:
        return "GPS 0,0 (a default, not a place)"
    return None


def run(batch: ImageBatch, inputs: list[StageInput], pool: Mapper) -> StageReport:
    results = pool(work, inputs, on_crash=worker_crashed)
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "extracted_at": now, **r.value.to_dict()}
            for r in results if r.ok]
    for row, place in zip(rows, place_fields(rows), strict=True):
        row.update(place)
    batch.save(results, Exif, rows)
    files = batch.to_lake(lake_tables.EXIF, rows)
    files += batch.to_lake(lake_tables.PLACE, [
        {**row, "datetime_utc": datetime.fromisoformat(row["datetime_utc"]) if row["datetime_utc"] else None}
        for row in rows if row["timezone"] or row["datetime_utc"]])
    check = batch.check(CHECK, [CheckOutcome(row["image_id"], row["tenant_id"], problem is None, problem)
                                for row in rows for problem in [plausibility(row, now)]],
                        severity="warn", description=CHECK_DESCRIPTION)
    return batch.report(results, lake_files=files, checks=[check])
