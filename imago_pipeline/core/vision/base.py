"""The provider interface and the output every provider must produce."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

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


def _clean_lines(lines: list[str]) -> list[str]:
    cleaned = (" ".join(line.split()) for line in lines)
    return list(dict.fromkeys(line for line in cleaned if line))


class Summary(BaseModel):
    """A summary of a text as a few sentences; also the JSON schema sent to Gemini."""

    sentences: list[str] = Field(min_length=1, max_length=10,
                                 description="The summary, one sentence per item, in the order of the text.")

    @field_validator("sentences")
    @classmethod
    def _clean_sentences(cls, sentences: list[str]) -> list[str]:
        cleaned = _clean_lines(sentences)
        if not cleaned:
            raise ValueError("the summary has no sentence")
        return cleaned


class TaskDraft(BaseModel):
    """A task drafted from a free-form request; also the JSON schema sent to Gemini."""

    title: str = Field(min_length=1, max_length=120, description="A short imperative title, at most 80 characters.")
    description: str = Field(max_length=5000, description="The request, cleaned up.")
    priority: Literal["low", "medium", "high"] = Field(description="How urgent the request says it is.")
    due_date: date | None = Field(default=None, description="The deadline as an ISO date, null when none is given.")
    tags: list[str] = Field(max_length=8, description="Up to 8 short lowercase topic words.")
    checklist: list[str] = Field(max_length=20, description="The steps, one per item, in order.")

    @field_validator("title", "description")
    @classmethod
    def _clean_text(cls, text: str) -> str:
        return text.strip()

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        return _clean_lines([t.lower()[:64] for t in tags])

    @field_validator("checklist")
    @classmethod
    def _clean_checklist(cls, items: list[str]) -> list[str]:
        return _clean_lines(items)


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

    @abstractmethod
    def summarize(self, text: str, max_sentences: int) -> Summary:
        """At most `max_sentences` sentences that say what `text` is about."""

    @abstractmethod
    def draft_task(self, description: str, today: date) -> TaskDraft:
        """A structured task from a request in plain words; `today` anchors relative dates ("by Friday")."""
