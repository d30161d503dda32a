"""EXIF as one flat record from JPEG, TIFF, PNG, WebP, HEIC/HEIF and AVIF: read by ExifTool when it is
installed (`exiftool.py`: maker notes and unusual layouts too), by Pillow (and pillow-heif) otherwise.

Camera metadata is hostile input: every field is parsed on its own, and a value of the wrong type,
a zero denominator or an impossible date becomes None instead of failing the whole record.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from PIL import ExifTags, Image

from imago_pipeline.core.enrichment.decode import InvalidImage, open_image
from imago_pipeline.core.enrichment.exiftool import read_tags
from imago_pipeline.core.limits import MAX_PIXELS

_IFD0 = ExifTags.Base
_GPS = ExifTags.GPS


@dataclass(frozen=True)
class ExifRecord:
    make: str | None = None
    model: str | None = None
    lens_model: str | None = None
    datetime_original: str | None = None
    exposure_time: float | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: int | None = None
    orientation: int | None = None
    width: int | None = None
    height: int | None = None
    gps_latitude: float | None = None
    gps_longitude: float | None = None
    gps_altitude: float | None = None
    software: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EXIF_FIELDS = tuple(f.name for f in fields(ExifRecord))


def _first(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return value[0] if value else None
    return value


def _text(value: Any) -> str | None:
    value = _first(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # ExifTool's JSON turns a text tag like Software "8.3" into a number
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    value = "".join(ch for ch in value if ch.isprintable())
    return value[:255] or None


def _number(value: Any) -> float | None:
    value = _first(value)
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _positive_number(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return round(number) if number is not None else None


_EXIF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def _datetime(value: Any, offset: Any) -> str | None:
    """`2008:10:22 16:28:39` plus `+02:00` becomes `2008-10-22T16:28:39+02:00` (ISO 8601)."""
    text = _text(value)
    match = _EXIF_DATETIME.match(text or "")
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60 and year >= 1800):
        return None
    iso = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    offset_text = _text(offset)
    if offset_text and _OFFSET.match(offset_text):
        iso += offset_text
    return iso


def _gps_coordinate(value: Any, ref: Any, negative_ref: str) -> float | None:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        return None
    numbers = [_number(part) for part in value]
    parts = [part for part in numbers if part is not None]
    if len(parts) != 3:
        return None
    degrees, minutes, seconds = parts
    coordinate = degrees + minutes / 60 + seconds / 3600
    ref_text = (_text(ref) or "").upper()
    if ref_text.startswith(negative_ref):
        coordinate = -coordinate
    return round(coordinate, 8)


def _gps_altitude(value: Any, ref: Any) -> float | None:
    altitude = _number(value)
    if altitude is None:
        return None
    ref_value = _first(ref)
    if isinstance(ref_value, bytes):
        ref_value = ref_value[:1] == b"\x01"
    if ref_value in (1, True):
        altitude = -altitude
    return altitude


def _orientation(value: Any) -> int | None:
    orientation = _integer(value)
    return orientation if orientation is not None and 1 <= orientation <= 8 else None


def _safe(getter, *args) -> Any:
    try:
        return getter(*args)
    except Exception:  # a damaged tag must not cost the other fields
        return None


def _stored_orientation(image: Image.Image, exif: Image.Exif) -> int | None:
    # pillow-heif decodes HEIF upright and resets the tag to 1; the file's own value is kept aside.
    return _orientation(image.info.get("original_orientation", exif.get(_IFD0.Orientation)))


def _stored_size(image: Image.Image, orientation: int | None) -> tuple[int, int]:
    """Pixel size as stored in the file (what exiftool reports), before any orientation is applied."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and tags.get(256) and tags.get(257):
        return int(tags[256]), int(tags[257])
    if "original_orientation" in image.info and orientation in (5, 6, 7, 8):
        return image.height, image.width
    return image.width, image.height


def exif_from_image(image: Image.Image) -> ExifRecord:
    exif = image.getexif()
    orientation = _safe(_stored_orientation, image, exif)
    width, height = _stored_size(image, orientation)
    ifd = _safe(exif.get_ifd, ExifTags.IFD.Exif) or {}
    gps = _safe(exif.get_ifd, ExifTags.IFD.GPSInfo) or {}
    return ExifRecord(
        make=_safe(_text, exif.get(_IFD0.Make)),
        model=_safe(_text, exif.get(_IFD0.Model)),
        lens_model=_safe(_text, ifd.get(_IFD0.LensModel)),
        datetime_original=_safe(_datetime, ifd.get(_IFD0.DateTimeOriginal), ifd.get(_IFD0.OffsetTimeOriginal)),
        exposure_time=_safe(_positive_number, ifd.get(_IFD0.ExposureTime)),
        f_number=_safe(_positive_number, ifd.get(_IFD0.FNumber)),
        iso=_safe(_integer, ifd.get(_IFD0.ISOSpeedRatings)),
        focal_length_mm=_safe(_positive_number, ifd.get(_IFD0.FocalLength)),
        focal_length_35mm=_safe(_integer, ifd.get(_IFD0.FocalLengthIn35mmFilm)),
        orientation=orientation,
        width=width,
        height=height,
        gps_latitude=_safe(_gps_coordinate, gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "S"),
        gps_longitude=_safe(_gps_coordinate, gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "W"),
        gps_altitude=_safe(_gps_altitude, gps.get(_GPS.GPSAltitude), gps.get(_GPS.GPSAltitudeRef)),
        software=_safe(_text, exif.get(_IFD0.Software)),
    )


def exif_from_exiftool(tags: dict[str, Any]) -> ExifRecord:
    """ExifTool's tags (numeric values, no group names), checked field by field like Pillow's."""
    def coordinate(name: str) -> float | None:
        value = _number(tags.get(name))
        return round(value, 8) if value is not None and abs(value) <= 180 else None

    return ExifRecord(
        make=_safe(_text, tags.get("Make")),
        model=_safe(_text, tags.get("Model")),
        lens_model=_safe(_text, tags.get("LensModel")),
        datetime_original=_safe(_datetime, tags.get("DateTimeOriginal"), tags.get("OffsetTimeOriginal")),
        exposure_time=_safe(_positive_number, tags.get("ExposureTime")),
        f_number=_safe(_positive_number, tags.get("FNumber")),
        iso=_safe(_integer, tags.get("ISO")),
        focal_length_mm=_safe(_positive_number, tags.get("FocalLength")),
        focal_length_35mm=_safe(_integer, tags.get("FocalLengthIn35mmFormat")),
        orientation=_safe(_orientation, tags.get("Orientation")),
        width=_safe(_integer, tags.get("ImageWidth")),
        height=_safe(_integer, tags.get("ImageHeight")),
        gps_latitude=_safe(coordinate, "GPSLatitude"),
        gps_longitude=_safe(coordinate, "GPSLongitude"),
        gps_altitude=_safe(_number, tags.get("GPSAltitude")),
        software=_safe(_text, tags.get("Software")),
    )


def extract_exif(data: bytes, *, max_pixels: int = MAX_PIXELS) -> ExifRecord:
    """The EXIF record of an image file's bytes, read by ExifTool when it is installed, else by Pillow;
    raises InvalidImage when it is not a readable image."""
    image = open_image(data, max_pixels)  # the same checks as every stage: a non-image never reaches ExifTool
    try:
        tags = read_tags(data)
        if tags is None:
            return exif_from_image(image)
        if not str(tags.get("Warning", "[minor]")).startswith("[minor]"):
            exif_from_image(image)  # ExifTool found the file damaged: Pillow says whether it is unreadable
        return exif_from_exiftool(tags)
    except InvalidImage:
        raise
    except Exception as exc:
        raise InvalidImage(f"unreadable metadata: {type(exc).__name__}: {exc}") from exc
    finally:
        image.close()
