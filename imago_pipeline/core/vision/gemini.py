"""Google Gemini through the `google-genai` SDK: structured JSON output validated against our schema.

Transient failures (429 and 5xx) are retried by the SDK with exponential backoff and jitter; what is still
failing afterwards, a blocked answer or output that does not match the schema becomes a `VisionError` with
the reason, recorded on the image (or returned by the AI endpoints). Tests point `base_url` at a local server
speaking the same protocol.
"""

from __future__ import annotations

import json
from typing import TypeVar

from google import genai
from google.genai import errors, types
from pydantic import BaseModel, ValidationError

from imago_pipeline.core.vision.base import (
    PROMPT_VERSION,
    TextReading,
    VisionContext,
    VisionError,
    VisionOutput,
    VisionProvider,
)

RETRIED_STATUS_CODES = [408, 429, 500, 502, 503, 504]
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
class GeminiClient:
    """Structured generation: `generate(contents, schema)` answers an instance of the pydantic `schema`."""

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None, attempts: int = 4,
                 initial_delay: float = 1.0, max_delay: float = 30.0, timeout_s: float = 60.0):
        if not api_key:
            raise VisionError("the gemini provider needs an API key (IMAGO_GEMINI_API_KEY)")
        self.model = model
        self.name = f"gemini:{model}"
        retry = types.HttpRetryOptions(attempts=attempts, initial_delay=initial_delay, max_delay=max_delay,
                                       http_status_codes=RETRIED_STATUS_CODES)
        self.client = genai.Client(api_key=api_key, http_options=types.HttpOptions(
            base_url=base_url, retry_options=retry, timeout=int(timeout_s * 1000)))

    def generate(self, contents: list, schema: type[T]) -> T:
        try:
            response = self.client.models.generate_content(
                model=self.model,
                contents=contents,
                config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema,
                                                   temperature=0.2),
            )
        except errors.APIError as exc:
            raise VisionError(f"{self.name} failed with HTTP {exc.code}: {exc.message or exc.status}") from exc
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and feedback.block_reason:
            raise VisionError(f"{self.name} blocked the request ({feedback.block_reason})")
        candidate = response.candidates[0] if response.candidates else None
        finish = getattr(candidate, "finish_reason", None)
        if candidate is None or (finish is not None and str(finish).split(".")[-1] in
                                 ("SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION")):
            raise VisionError(f"{self.name} gave no answer (finish reason {finish})")
        raw = response.text or ""
        try:
            return schema.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise VisionError(f"{self.name} answered with output that does not match the schema: "
                              f"{str(exc).splitlines()[0][:200]}") from exc


class GeminiVisionProvider(VisionProvider):
    def __init__(self, client: GeminiClient):
        self.client = client
        self.name = client.name

    @property
    def remote(self) -> bool:
        return True

    def describe(self, context: VisionContext) -> VisionOutput:
        hints = ""
        if context.has_text and context.ocr_text:
            hints = f" OCR found this text in it: {context.ocr_text[:500]!r}."
        return self.client.generate([_jpeg(context.image_jpeg), DESCRIBE_PROMPT.format(hints=hints)], VisionOutput)

    def read_text(self, image_jpeg: bytes) -> TextReading:
        return self.client.generate([_jpeg(image_jpeg), READ_TEXT_PROMPT], TextReading)


def _jpeg(data: bytes) -> types.Part:
    return types.Part.from_bytes(data=data, mime_type="image/jpeg")


__all__ = ["PROMPT_VERSION", "GeminiClient", "GeminiVisionProvider"]
