"""Response shapes, kept apart from the catalog tables."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field


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
    status: str
    error: str | None
    attempts: int
    dead_letter: bool
    stages: list[StageOut]
    checks: list[CheckOut]


class ImageOut(_FromRow):
    id: int
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
    extracted_at: datetime


class ThumbnailOut(_FromRow):
    width: int
    height: int
    byte_size: int
    created_at: datetime


class WordOut(BaseModel):
    text: str
    confidence: float
    left: int
    top: int
    width: int
    height: int


class OcrOut(_FromRow):
    text: str
    confidence: float | None
    language: str | None
    has_text: bool
    rotation: int
    mode: str
    engine: str
    words: list[WordOut]
    created_at: datetime


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
