"""Response shapes, kept apart from the catalog tables.

One representation serves both kinds of clients: Imago's own fields, and beside them the fields the
original Imago service's clients read (`../shared/SEED-API.md`, docs/api.md "Clients of the original
service"): `uuid`, `message`, `processing_status`, `started_at`/`done_at`, `exif.camera` and `exif.gps`.
Those are computed from the same rows by the same routes, never a second code path.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from imago_pipeline.core.enrichment.places import country_name


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class StageOut(_FromRow):
    stage: str
    status: str
    error: str | None
    duration_ms: float | None
    code_version: str | None
    updated_at: datetime


class CheckOut(_FromRow):
    check_name: str
    passed: bool
    detail: str | None
    updated_at: datetime


class StatusOut(BaseModel):
    id: int
    uuid: str
    status: str
    error: str | None
    attempts: int
    dead_letter: bool
    started_at: datetime | None = Field(description="When the current processing attempt was taken into work")
    done_at: datetime | None = Field(description="When processing finished (`done` or `failed`), else null")
    stages: list[StageOut]
    checks: list[CheckOut]


class ImageOut(_FromRow):
    id: int
    uuid: str = Field(description="Another stable id of the image: `/images/{uuid}` works like `/images/{id}`")
    sha256: str
    original_name: str
    media_type: str
    byte_size: int
    width: int
    height: int
    status: str
    error: str | None
    created_at: datetime
    processed_at: datetime | None
    attempts: int = Field(description="Automatic retries made after failures (the nightly reprocessing)")
    next_attempt_at: datetime | None
    gave_up_at: datetime | None = Field(description="Set when retries ran out: the image stays failed (dead letter)")

    @computed_field
    @property
    def dead_letter(self) -> bool:
        return self.gave_up_at is not None


class UploadOut(ImageOut):
    duplicate: bool

    @computed_field
    @property
    def message(self) -> str:
        if self.duplicate:
            return f"These bytes were already uploaded as image {self.id} (status {self.status}): nothing new stored"
        return f"Image received: processing has started; follow it at /images/{self.id}/status"


def _trimmed(value: float, digits: int) -> str:
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def shutter_speed(seconds: float | None) -> str | None:
    """1/250 for short exposures, seconds otherwise (0.5, 2, 30), the way cameras and ExifTool print it."""
    if seconds is None or seconds <= 0:
        return None
    return f"1/{round(1 / seconds)}" if seconds < 0.25001 else _trimmed(seconds, 1)


class CameraOut(BaseModel):
    make: str | None
    model: str | None
    iso: int | None
    aperture: str | None = Field(description="The f-number as written on a lens, e.g. `f/2.8`")
    shutter_speed: str | None = Field(description="Exposure time, e.g. `1/250` or `2` (seconds)")
    focal_length: str | None = Field(description="e.g. `50mm` (the lens's own, not the 35 mm equivalent)")
    taken_at: str | None = Field(description="Capture time, ISO 8601, with its offset when the file or the "
                                             "GPS position tells it")


class PlaceOut(BaseModel):
    city: str | None = Field(description="Nearest town of 1,000+ people within 100 km (GeoNames)")
    admin1: str | None = Field(description="Region: state, province, région")
    country_code: str | None = Field(description="ISO 3166-1 alpha-2")
    country: str | None
    timezone: str | None = Field(description="IANA time zone of the point")


class GpsOut(BaseModel):
    latitude: float | None = Field(description="Signed decimal degrees (south is negative)")
    longitude: float | None = Field(description="Signed decimal degrees (west is negative)")
    altitude: float | None = Field(description="Metres above sea level")
    has_gps: bool
    maps_url: str | None = Field(description="OpenStreetMap at the point")
    place: PlaceOut | None = Field(description="Where that is, looked up offline; null without GPS")


class ExifOut(_FromRow):
    make: str | None
    model: str | None
    lens_model: str | None
    datetime_original: str | None
    exposure_time: float | None
    f_number: float | None
    iso: int | None
    focal_length_mm: float | None
    focal_length_35mm: int | None
    orientation: int | None
    width: int | None
    height: int | None
    gps_latitude: float | None
    gps_longitude: float | None
    gps_altitude: float | None
    software: str | None
    city: str | None = None
    admin1: str | None = None
    country_code: str | None = None
    timezone: str | None = None
    datetime_utc: str | None = Field(default=None, description="Capture time in UTC: the file's offset, else "
                                                                "the time zone of its GPS position")
    extracted_at: datetime

    @computed_field
    @property
    def camera(self) -> CameraOut:
        return CameraOut(
            make=self.make, model=self.model, iso=self.iso,
            aperture=f"f/{_trimmed(self.f_number, 1)}" if self.f_number else None,
            shutter_speed=shutter_speed(self.exposure_time),
            focal_length=f"{_trimmed(self.focal_length_mm, 1)}mm" if self.focal_length_mm else None,
            taken_at=self._taken_at())

    def _taken_at(self) -> str | None:
        taken = self.datetime_original
        if taken and self.datetime_utc and self.timezone:
            local = datetime.fromisoformat(taken)
            if local.tzinfo is None:  # the camera wrote a local time: its offset is the GPS position's zone's
                return local.replace(tzinfo=ZoneInfo(self.timezone)).isoformat()
        return taken

    @computed_field
    @property
    def gps(self) -> GpsOut:
        has_gps = self.gps_latitude is not None and self.gps_longitude is not None
        place = None
        if self.timezone or self.country_code:
            place = PlaceOut(city=self.city, admin1=self.admin1, country_code=self.country_code,
                             country=country_name(self.country_code), timezone=self.timezone)
        return GpsOut(latitude=self.gps_latitude, longitude=self.gps_longitude, altitude=self.gps_altitude,
                      has_gps=has_gps, place=place,
                      maps_url=(f"https://www.openstreetmap.org/?mlat={self.gps_latitude:.6f}"
                                f"&mlon={self.gps_longitude:.6f}#map=16/{self.gps_latitude:.6f}/"
                                f"{self.gps_longitude:.6f}") if has_gps else None)


class ThumbnailOut(_FromRow):
    width: int
    height: int
    byte_size: int
    created_at: datetime


def _unit_confidence(value: float | None) -> float | None:
    """OCR engines score 0-100 (kept so in the catalog); the API, like every other confidence, says 0-1."""
    return None if value is None else round(value / 100, 4)


class WordOut(BaseModel):
    text: str
    confidence: float = Field(description="0 to 1")
    left: int
    top: int
    width: int
    height: int


class OcrOut(_FromRow):
    text: str
    confidence: float | None = Field(description="Mean word confidence, 0 to 1")
    language: str | None
    has_text: bool
    rotation: int
    mode: str
    engine: str
    words: list[WordOut]
    created_at: datetime

    @field_validator("confidence", mode="after")
    @classmethod
    def _scaled(cls, value: float | None) -> float | None:
        return _unit_confidence(value)

    @field_validator("words", mode="before")
    @classmethod
    def _scaled_words(cls, words: list) -> list:
        return [{**w, "confidence": _unit_confidence(w["confidence"])} if isinstance(w, dict) else w for w in words]


class VisionOut(_FromRow):
    description: str
    tags: list[str]
    confidence: float | None
    model_used: str
    created_at: datetime


class ClassificationOut(_FromRow):
    label: str = Field(description="`cat`, `dog`, or `other` (neither a cat nor a dog)")
    probability: float = Field(description="Probability of `label`")
    probabilities: dict[str, float] | None = Field(default=None, description="Every label's probability")
    model_version: str
    created_at: datetime


class ContentOut(BaseModel):
    """One of the ImageNet classes the backbone sees, with readable tags."""

    name: str
    tags: list[str]
    probability: float


class SimilarItem(BaseModel):
    image: ImageOut
    score: float = Field(description="Cosine similarity of the two images' embeddings, -1 to 1")


class SimilarOut(BaseModel):
    image_id: int
    items: list[SimilarItem]


class DuplicateGroupOut(BaseModel):
    images: list[ImageOut]
    min_score: float = Field(description="The weakest fingerprint correlation that joined the group")


class DuplicatesOut(BaseModel):
    threshold: float
    groups: list[DuplicateGroupOut]


class TagCount(BaseModel):
    tag: str
    count: int


class ImageDetailOut(ImageOut):
    stages: list[StageOut]
    checks: list[CheckOut]
    exif: ExifOut | None
    thumbnail: ThumbnailOut | None
    ocr: OcrOut | None
    classification: ClassificationOut | None
    content: list[ContentOut] | None = Field(default=None, description="What the backbone sees (top ImageNet classes)")
    ai: VisionOut | None

    @computed_field(description="The image's status, under the name the original service's clients read")
    @property
    def processing_status(self) -> str:
        return self.status


class UsageOut(BaseModel):
    images: int
    bytes_used: int
    quota_bytes: int | None  # null: unlimited


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    limit: int
    offset: int
    usage: UsageOut


class HealthOut(BaseModel):
    status: str
    catalog: str
