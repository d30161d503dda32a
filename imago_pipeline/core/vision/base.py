"""The vision provider interface (describe an image, read its text) and the output every provider must produce."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator

PROMPT_VERSION = "prompt-v1"


class VisionOutput(BaseModel):
    """What a provider returns; also the JSON schema sent to Gemini for structured output."""

    description: str = Field(min_length=1, max_length=600, description="One or two sentences describing the image.")
    tags: list[str] = Field(max_length=20, description="Up to 20 short lowercase tags.")
    confidence: float = Field(ge=0.0, le=1.0, description="How sure the model is of the description, 0 to 1.")

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        cleaned = [" ".join(t.lower().split())[:64] for t in tags]
        return list(dict.fromkeys(t for t in cleaned if t))


class TextReading(BaseModel):
    """A provider's transcription of the text in an image (the OCR fallback)."""

    text: str = Field(description="All legible text, in reading order, with line breaks.")
    language: str | None = Field(default=None, description="ISO 639-1 code of the main language, if any text.")


@dataclass(frozen=True)
class VisionContext:
    """What the pipeline already knows about an image, for providers that use it."""

    image_jpeg: bytes  # the upright thumbnail
    width: int
    height: int
    exif: dict[str, Any] = field(default_factory=dict)
    ocr_text: str = ""
    ocr_language: str | None = None
    has_text: bool = False
    classification: dict[str, Any] | None = None
    imagenet: tuple[tuple[int, float], ...] = ()  # the backbone's top ImageNet classes: (index, probability)


class VisionError(RuntimeError):
    """The provider could not answer; the message says why (recorded on the image, or returned by the API)."""


class VisionProvider(ABC):
    name: str  # recorded in `model_used`

    @property
    def remote(self) -> bool:
        return False

    @abstractmethod
    def describe(self, context: VisionContext) -> VisionOutput: ...

    def read_text(self, image_jpeg: bytes) -> TextReading:
        raise NotImplementedError(f"{self.name} cannot read text")
