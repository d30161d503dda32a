"""OpenRouter (any of its models) through its OpenAI-compatible chat-completions API, with the `openai` SDK.

The image travels as a `data:` URL in an `image_url` part; the answer is requested as JSON matching our
schema (`response_format` `json_schema`) and validated. Transient failures (408, 409, 429 and 5xx,
connection errors) are retried by the SDK with exponential backoff, honouring `Retry-After`; what still
fails, a refusal, a filtered answer or output that does not match the schema becomes a `VisionError` with
the reason. Tests point `base_url` at a local server speaking the same protocol.
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from imago_pipeline.core.vision.base import VisionError
from imago_pipeline.core.vision.remote import Jpeg

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
T = TypeVar("T", bound=BaseModel)


class OpenRouterClient:
    """Structured generation: `generate(parts, schema)` answers an instance of the pydantic `schema`."""

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None, attempts: int = 4,
                 timeout_s: float = 60.0):
        if not api_key:
            raise VisionError("the openrouter provider needs an API key (IMAGO_OPENROUTER_API_KEY)")
        self.model = model
        self.name = f"openrouter:{model}"
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url or DEFAULT_BASE_URL,
                                    max_retries=attempts - 1, timeout=timeout_s,
                                    default_headers={"X-Title": "Imago"})

    def generate(self, parts: list[str | Jpeg], schema: type[T]) -> T:
        messages: Any = [{"role": "user", "content": [_part(p) for p in parts]}]
        answer_as: Any = {"type": "json_schema", "json_schema": {"name": schema.__name__,
                                                                 "schema": schema.model_json_schema()}}
        try:
            response = self.client.chat.completions.create(model=self.model, messages=messages,
                                                           response_format=answer_as, temperature=0.2)
        except openai.APIStatusError as exc:
            raise VisionError(f"{self.name} failed with HTTP {exc.status_code}: {_message(exc.body)}") from exc
        except openai.APIConnectionError as exc:  # the timeout too
            raise VisionError(f"{self.name} could not be reached: {exc}") from exc
        choice = response.choices[0] if response.choices else None
        if choice is None:
            raise VisionError(f"{self.name} gave no answer")
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            raise VisionError(f"{self.name} refused: {refusal[:200]}")
        if choice.finish_reason == "content_filter":
            raise VisionError(f"{self.name} gave no answer (finish reason content_filter)")
        raw = choice.message.content or ""
        try:
            return schema.model_validate(json.loads(_unfenced(raw)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise VisionError(f"{self.name} answered with output that does not match the schema: "
                              f"{str(exc).splitlines()[0][:200]}") from exc


def _part(part: str | Jpeg) -> dict[str, Any]:
    if isinstance(part, Jpeg):
        url = "data:image/jpeg;base64," + base64.b64encode(part.data).decode()
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "text", "text": part}


def _unfenced(raw: str) -> str:
    """Some models wrap JSON in a Markdown code fence even when asked for JSON."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _message(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
    return str(body)[:200] if body else "no details"
