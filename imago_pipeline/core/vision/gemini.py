"""Google Gemini through the `google-genai` SDK: structured JSON output validated against our schema.

Transient failures (429 and 5xx) are retried by the SDK with exponential backoff and jitter; what is still
failing afterwards, a blocked answer or output that does not match the schema becomes a `VisionError` with
the reason, recorded on the image (or returned by the AI endpoints). Tests point `base_url` at a local server
speaking the same protocol.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from google import genai
from google.genai import errors, types
from pydantic import BaseModel, ValidationError

from imago_pipeline.core.vision.base import PROMPT_VERSION, VisionError
from imago_pipeline.core.vision.remote import Jpeg

RETRIED_STATUS_CODES = [408, 429, 500, 502, 503, 504]
T = TypeVar("T", bound=BaseModel)

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

    def generate(self, parts: list[str | Jpeg], schema: type[T]) -> T:
        contents: Any = [_part(p) for p in parts]  # the SDK's union of content types
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


def _part(part: str | Jpeg) -> types.Part:
    if isinstance(part, Jpeg):
        return types.Part.from_bytes(data=part.data, mime_type="image/jpeg")
    return types.Part.from_text(text=part)


__all__ = ["PROMPT_VERSION", "GeminiClient"]
