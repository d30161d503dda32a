"""EXIF extraction against exiftool's ground truth on ../shared/data/exif."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.enrichment.exif import EXIF_FIELDS, extract_exif
from imago_pipeline.core.enrichment.exiftool import exiftool_version
from imago_pipeline.core.enrichment.places import PLACE_FIELDS, place_fields, places_version, utc_time
from tests.conftest import REPO, SAMPLES, shared

SAMPLE = SAMPLES / "Canon_40D.jpg"

EXIFTOOL_TAG = {
    "make": "Make", "model": "Model", "lens_model": "LensModel", "datetime_original": "DateTimeOriginal",
    "exposure_time": "ExposureTime", "f_number": "FNumber", "iso": "ISO", "focal_length_mm": "FocalLength",
    "focal_length_35mm": "FocalLengthIn35mmFormat", "orientation": "Orientation", "width": "ImageWidth",
    "height": "ImageHeight", "gps_latitude": "GPSLatitude", "gps_longitude": "GPSLongitude",
    "gps_altitude": "GPSAltitude", "software": "Software",
}

# With ExifTool installed (it is the reader when present) every field agrees on every file. Pillow alone
# (the fallback) missed ISO that only Canon's maker notes carry, one JPEG whose EXIF segment it does not
# find, one date stored only in maker notes, one HEIF orientation derived from the container.
MINIMUM_AGREEMENT = dict.fromkeys(EXIF_FIELDS, 1.0)
PILLOW_MINIMUM_AGREEMENT = dict.fromkeys(EXIF_FIELDS, 1.0) | {
    "make": 0.98, "model": 0.98, "focal_length_mm": 0.98, "datetime_original": 0.97, "iso": 0.90,
    "orientation": 0.98, "software": 0.97,
}


def _expected(field: str, truth: dict):
    value = truth.get(EXIFTOOL_TAG[field])
    if field == "datetime_original" and value is not None:
        text = str(value)
        return None if text.startswith("0000") else text[:10].replace(":", "-") + "T" + text[11:19]
    if isinstance(value, str):
        return value.strip() or None
    return value


def _agrees(field: str, expected, ours) -> bool:
    if field == "datetime_original" and ours:
        ours = ours[:19]  # exiftool's DateTimeOriginal has no offset; ours appends OffsetTimeOriginal
    if field == "iso" and isinstance(expected, (int, float)) and ours is not None:
        return round(expected) == ours  # an integer field: ExifTool computes 64.84 from Canon maker notes
    if isinstance(expected, (int, float)) and isinstance(ours, (int, float)):
        return math.isclose(expected, ours, rel_tol=1e-3, abs_tol=1e-6)
    if field == "software" and expected is not None:
        return str(expected) == ours
    return expected == ours


@pytest.mark.parametrize("reader", ["exiftool", "pillow"])
def test_exif_agrees_with_exiftool_per_field(capsys, monkeypatch, reader):
    """ExifTool (the reader when installed): 100% per field. Pillow (the fallback): its measured floor."""
    if reader == "pillow":
        monkeypatch.setattr("imago_pipeline.core.enrichment.exif.read_tags", lambda data: None)
    else:
        assert exiftool_version(), "exiftool is installed by scripts/install-system-packages.sh"
    minimum = MINIMUM_AGREEMENT if reader == "exiftool" else PILLOW_MINIMUM_AGREEMENT
    ground_truth = sorted(shared("exif").rglob("*.exiftool.json"))
    assert len(ground_truth) >= 70
    agree, total, misses = Counter(), Counter(), []
    for gt_path in ground_truth:
        image_path = Path(str(gt_path).removesuffix(".exiftool.json"))
        truth = json.loads(gt_path.read_text())[0]
        record = extract_exif(image_path.read_bytes()).to_dict()
        for field in EXIF_FIELDS:
            expected = _expected(field, truth)
            total[field] += 1
            if _agrees(field, expected, record[field]):
                agree[field] += 1
            else:
                misses.append(f"{image_path.name}: {field} exiftool={expected!r} ours={record[field]!r}")
    with capsys.disabled():
        print(f"\nEXIF read by {reader}: agreement with exiftool's ground truth over {len(ground_truth)} files:")
        for field in EXIF_FIELDS:
            print(f"  {field:<18} {agree[field]:>3}/{total[field]}  {agree[field] / total[field]:6.1%}")
        print("  misses:\n    " + "\n    ".join(misses))
    low = {f: agree[f] / total[f] for f in EXIF_FIELDS if agree[f] / total[f] < minimum[f]}
    assert not low, f"fields below their measured agreement: {low}"


def test_gps_is_signed_decimal_degrees_and_dates_carry_offsets():
    west = extract_exif(shared("exif", "exif-samples", "heic", "IMG_5195.HEIC").read_bytes())
    assert west.gps_latitude == pytest.approx(39.0513444, abs=1e-6)
    assert west.gps_longitude == pytest.approx(-94.2887722, abs=1e-6)  # west is negative
    assert west.datetime_original == "2021-04-11T15:47:53-05:00"
    assert west.make == "Apple" and west.model == "iPhone 11 Pro Max"


def test_heic_orientation_and_size_are_the_files_own():
    record = extract_exif(shared("exif", "exif-samples", "heic", "mobile", "iphone_13_pro_max.HEIC").read_bytes())
    assert (record.orientation, record.width, record.height) == (6, 4032, 3024)


def test_not_an_image_raises_invalid_image():
    with pytest.raises(InvalidImage):
        extract_exif(b"%PDF-1.7 definitely not an image")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imago_pipeline", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_cli_prints_one_json_object_with_every_field():
    result = _cli("exif", str(shared("exif", "exif-samples", "jpg", "gps", "DSCN0010.jpg")), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert list(record) == [*EXIF_FIELDS, *PLACE_FIELDS]
    assert record["make"] == "NIKON" and record["iso"] == 64
    assert (record["city"], record["admin1"], record["country_code"], record["timezone"]) == (
        "Arezzo", "Tuscany", "IT", "Europe/Rome")
    assert record["datetime_utc"] == "2008-10-22T14:28:39Z"  # 16:28:39 local, CEST (UTC+2) in October 2008
    assert record["gps_latitude"] == pytest.approx(43.4674483, abs=1e-6)
    assert record["lens_model"] is None  # absent fields are null, not missing


def test_cli_damaged_file_exits_non_zero_with_one_line_reason():
    result = _cli("exif", str(shared("bad", "pillow__truncated_image.png")), "--json")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated_image.png" in lines[0]


def test_the_exiftool_process_ends_with_the_process_that_started_it():
    """One long-lived `exiftool -stay_open` per worker process; it must not outlive that process, whether it
    exits or is killed."""
    import psutil

    script = ("import sys, time; from imago_pipeline.core.enrichment.exif import extract_exif; "
              f"extract_exif(open({str(SAMPLE)!r}, 'rb').read()); print('read', flush=True); "
              "time.sleep(float(sys.argv[1]))")
    for ending in ("exit", "kill"):
        worker = subprocess.Popen([sys.executable, "-c", script, "0.5" if ending == "exit" else "60"],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert worker.stdout.readline().strip() == "read"
        helpers = [p for p in psutil.Process(worker.pid).children(recursive=True) if "-stay_open" in p.cmdline()]
        assert len(helpers) == 1, helpers
        if ending == "kill":
            worker.kill()
        worker.wait(30)
        _, alive = psutil.wait_procs(helpers, timeout=10)
        assert not alive, f"exiftool outlived its process ({ending})"


def test_the_stage_code_version_names_the_reader(monkeypatch):
    from imago_pipeline.core.enrichment import versions

    assert versions.exif_code_version() == f"exif-v3|exiftool-{exiftool_version()}|{places_version()}"
    monkeypatch.setattr(versions, "exiftool_version", lambda: None)
    assert versions.exif_code_version() == f"exif-v3|pillow|{places_version()}"


# Every GPS file of shared/data/exif, with the place a map shows at its coordinates (checked by hand on
# OpenStreetMap) and the capture time in UTC its clock and zone give.
GPS_PLACES = {
    ("heic", "IMG_5195.HEIC"): ("Blue Springs", "Missouri", "US", "America/Chicago", "2021-04-11T20:47:53Z"),
    **{("jpg", "gps", f"DSCN00{n}.jpg"): ("Arezzo", "Tuscany", "IT", "Europe/Rome", f"2008-10-22T{utc}Z")
       for n, utc in (("10", "14:28:39"), ("12", "14:29:49"), ("21", "14:38:20"), ("25", "14:43:21"),
                      ("27", "14:44:01"), ("29", "14:46:53"), ("38", "14:52:15"), ("40", "14:55:37"),
                      ("42", "15:00:07"))},
    **{("jpg", "hdr", f"iphone_hdr_{hdr}.jpg"): ("Moncloa-Aravaca", "Madrid", "ES", "Europe/Madrid",
                                                "2015-04-10T18:12:23Z") for hdr in ("NO", "YES")},
    ("jpg", "tests", "87_OSError.jpg"): ("Florence", "Tuscany", "IT", "Europe/Rome", "2005-12-14T13:39:47Z"),
}


def test_gps_files_get_their_place_time_zone_and_utc_time():
    records = [extract_exif(shared("exif", "exif-samples", *path).read_bytes()).to_dict() for path in GPS_PLACES]
    found = {path: tuple(place.values()) for path, place in zip(GPS_PLACES, place_fields(records), strict=True)}
    assert found == GPS_PLACES


def test_a_place_needs_a_position_on_land_near_a_town():
    at_sea, null_island, no_gps, madrid = place_fields([
        {"gps_latitude": 10.0, "gps_longitude": -30.0, "datetime_original": "2020-01-01T12:00:00"},  # Atlantic
        {"gps_latitude": 0.0, "gps_longitude": 0.0, "datetime_original": "2020-01-01T12:00:00"},  # a default
        {"gps_latitude": None, "gps_longitude": None, "datetime_original": "2020-07-01T12:00:00+02:00"},
        {"gps_latitude": 40.4168, "gps_longitude": -3.7038, "datetime_original": "2020-01-15T12:00:00"},
    ])
    assert at_sea == {"city": None, "admin1": None, "country_code": None, "timezone": "Etc/GMT+2",
                      "datetime_utc": "2020-01-01T14:00:00Z"}  # the sea's nautical zone still places the clock
    assert null_island == dict.fromkeys(PLACE_FIELDS)
    assert no_gps == {**dict.fromkeys(PLACE_FIELDS), "datetime_utc": "2020-07-01T10:00:00Z"}  # its own offset
    assert (madrid["city"], madrid["country_code"], madrid["datetime_utc"]) == ("Madrid", "ES", "2020-01-15T11:00:00Z")


def test_utc_time_follows_daylight_saving_and_refuses_to_guess():
    assert utc_time("2021-07-01T12:00:00", "Europe/Paris") == "2021-07-01T10:00:00Z"  # CEST
    assert utc_time("2021-12-01T12:00:00", "Europe/Paris") == "2021-12-01T11:00:00Z"  # CET
    assert utc_time("2021-12-01T12:00:00-05:00", "Europe/Paris") == "2021-12-01T17:00:00Z"  # the file's offset wins
    assert utc_time("2021-12-01T12:00:00", None) is None  # a local time and no position: unknown
    assert utc_time("not a date", "Europe/Paris") is None
    # past the calendar's ends in UTC: unknown (it crashed the batch's EXIF stage with OverflowError)
    assert utc_time("9999-12-31T23:59:59-12:00", None) is None
    assert utc_time("9999-12-31T23:59:59", "Pacific/Honolulu") is None
    assert utc_time("0001-01-01T00:00:00+12:00", None) is None
