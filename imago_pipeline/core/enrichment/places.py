"""Where and when a photo was taken, from its GPS position, offline: the nearest city, its region and
country (GeoNames cities of 1,000+ people, shipped in `reverse_geocoder`), the IANA time zone of the
point (`timezonefinder`'s polygons, shipped in `timezonefinder-data`), and the capture time in UTC.

Nothing leaves the machine. Loading the cities takes about 1.5 s and 100 MB once per process, so it is
done lazily, once, and by the run host before it forks runs (`run_host.preload`), not per image.

Choices (docs/exif.md): the nearest city is searched in plain latitude/longitude (reverse_geocoder's
k-d tree) and then kept only when it lies within `MAX_CITY_KM` of the point by great-circle distance, so
a photo taken at sea or in a desert gets no city (its time zone still comes from the polygons: the sea
has `Etc/GMT±N` zones). A capture time with its own offset is converted as written; a local time
without one is placed in the point's time zone (the zone's rules on that date, daylight saving included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import version
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_CITY_KM = 100.0
PLACE_FIELDS = ("city", "admin1", "country_code", "timezone", "datetime_utc")
_EARTH_KM = 6371.0


@dataclass(frozen=True)
class Place:
    city: str | None = None
    admin1: str | None = None  # the region: state, province, région
    country_code: str | None = None  # ISO 3166-1 alpha-2
    timezone: str | None = None  # IANA name, e.g. Europe/Madrid


@lru_cache(maxsize=1)
def _cities():
    import reverse_geocoder

    return reverse_geocoder.RGeocoder(mode=1, verbose=False)  # mode 1: no process pool of its own


@lru_cache(maxsize=1)
def _zones():
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def warm() -> None:
    """Load the cities and the time-zone polygons now (the run host does, so runs fork them loaded)."""
    _cities()
    _zones()


def places_version() -> str:
    """Part of the EXIF stage's code version: new GeoNames or zone data can name a point differently."""
    return (f"reverse_geocoder-{version('reverse_geocoder')}|timezonefinder-{version('timezonefinder')}"
            f"|tzdata-{version('timezonefinder-data')}")


def country_name(code: str | None) -> str | None:
    """The country's English name (ISO 3166, from pycountry), or the code itself when ISO has none (XK)."""
    if not code:
        return None
    import pycountry

    country = pycountry.countries.get(alpha_2=code)
    return getattr(country, "common_name", None) or country.name if country else code


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dp, dl = map(math.radians, (lat1, lat2, lat2 - lat1, lon2 - lon1))
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


def locate(points: list[tuple[float, float]]) -> list[Place]:
    """The place of each (latitude, longitude), in order; one k-d tree query for all of them."""
    if not points:
        return []
    nearest = _cities().query(points)
    zones = _zones()
    places = []
    for (lat, lon), city in zip(points, nearest, strict=True):
        found = city if _km(lat, lon, float(city["lat"]), float(city["lon"])) <= MAX_CITY_KM else {}
        places.append(Place(city=found.get("name") or None, admin1=found.get("admin1") or None,
                            country_code=found.get("cc") or None, timezone=zones.timezone_at(lat=lat, lng=lon)))
    return places


def utc_time(taken: str | None, timezone: str | None) -> str | None:
    """The capture time in UTC (ISO 8601 with `Z`): `taken` with its own offset as written, else in
    `timezone`; None when neither says where the clock was, or when the moment in UTC falls outside the
    years 1..9999 (a camera's 9999-12-31 west of Greenwich: a date to flag, not to crash the batch on)."""
    if not taken:
        return None
    try:
        moment = datetime.fromisoformat(taken)
    except ValueError:
        return None
    if moment.tzinfo is None:
        if not timezone:
            return None
        try:
            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            return None
    try:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:
        return None


def _point(record: Mapping) -> tuple[float, float] | None:
    lat, lon = record.get("gps_latitude"), record.get("gps_longitude")
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0):
        return None  # 0,0 is a camera's default, not a place
    return float(lat), float(lon)


def place_fields(records: Sequence[Mapping]) -> list[dict[str, str | None]]:
    """The `PLACE_FIELDS` of each EXIF record (a mapping with `gps_latitude`, `gps_longitude` and
    `datetime_original`), in order: what the record's position and clock say, None where they say nothing."""
    points = {i: point for i, record in enumerate(records) if (point := _point(record)) is not None}
    found = dict(zip(points, locate(list(points.values())), strict=True))
    out = []
    for i, record in enumerate(records):
        place = found.get(i, Place())
        out.append({**asdict(place), "datetime_utc": utc_time(record.get("datetime_original"), place.timezone)})
    return out
