"""A vision provider backed by a hosted model (Gemini, or any model through OpenRouter): one implementation,
whatever the client. A client answers `generate(parts, schema)`: the prompt and image parts in, an instance
of the pydantic `schema` out (structured JSON output, validated), or a `VisionError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import BaseModel

from imago_pipeline.core.vision.base import TextReading, VisionContext, VisionOutput, VisionProvider

T = TypeVar("T", bound=BaseModel)

DESCRIBE_PROMPT = (
    "Describe this image for a searchable photo catalog. Answer in English with JSON only: "
    "`description` (one or two factual sentences), `tags` (up to 20 short lowercase nouns or adjectives: "
    "subjects, setting, colours, kind of image) and `confidence` (0 to 1). Do not identify people.{hints}"
)
READ_TEXT_PROMPT = (
    "Transcribe all legible text in this image in reading order, keeping line breaks. Answer with JSON: "
    "`text` and `language` (ISO 639-1 code, null when there is no text)."
)


@dataclass(frozen=True)
class Jpeg:
    """An image part of a request."""

    data: bytes


class StructuredClient(Protocol):
    name: str  # "<provider>:<model>", recorded as the image's `model_used`

    def generate(self, parts: list[str | Jpeg], schema: type[T]) -> T: ...


class RemoteVisionProvider(VisionProvider):
    def __init__(self, client: StructuredClient):
        self.client = client
        self.name = client.name

    @property
    def remote(self) -> bool:
        return True

    def describe(self, context: VisionContext) -> VisionOutput:
        hints = ""
        if context.has_text and context.ocr_text:
            hints = f" OCR found this text in it: {context.ocr_text[:500]!r}."
        return self.client.generate([Jpeg(context.image_jpeg), DESCRIBE_PROMPT.format(hints=hints)], VisionOutput)

    def read_text(self, image_jpeg: bytes) -> TextReading:
        return self.client.generate([Jpeg(image_jpeg), READ_TEXT_PROMPT], TextReading)
