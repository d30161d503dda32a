"""The OpenRouter provider: the real `openai` client against a local server speaking the chat-completions
protocol (success, a rate limit then success, server errors until the attempts run out, malformed output,
a refusal, a filtered answer), and the settings that select it for the pipeline and the API."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imago_api.ai.providers import RemoteTextProvider, text_provider
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.vision.base import VisionContext, VisionError
from imago_pipeline.core.vision.factory import build_provider, provider_model
from imago_pipeline.core.vision.openrouter import OpenRouterClient
from imago_pipeline.core.vision.remote import RemoteVisionProvider
from tests.conftest import SAMPLES
from tests.gemini_server import GeminiProtocolServer as ScriptedServer
from tests.openrouter_server import chat_answer, error_answer, json_chat_answer

GOOD = {"description": "A green iguana's head in profile.", "tags": ["Iguana", "reptile", "green", "iguana"],
        "confidence": 0.92}
MODEL = "google/gemini-2.5-flash"


def _thumbnail() -> bytes:
    image = Image.open(SAMPLES / "Canon_40D.jpg").convert("RGB")
    image.thumbnail((256, 256))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


def _provider(server, attempts=3) -> RemoteVisionProvider:
    return RemoteVisionProvider(OpenRouterClient(api_key="test-key", model=MODEL, base_url=server.url,
                                                 attempts=attempts, timeout_s=10))


def _context(**extra) -> VisionContext:
    return VisionContext(image_jpeg=_thumbnail(), width=100, height=68, **extra)


def test_success_sends_the_image_the_prompt_and_the_schema_and_validates_the_answer():
    with ScriptedServer([json_chat_answer(GOOD)]) as server:
        output = _provider(server).describe(_context(has_text=True, ocr_text="HELLO"))
    assert output.description == GOOD["description"] and output.confidence == 0.92
    assert output.tags == ["iguana", "reptile", "green"]
    request = server.requests[0]
    assert request["path"] == "/chat/completions"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["authorization"] == "Bearer test-key" and headers["x-title"] == "Imago"
    body = request["body"]
    assert body["model"] == MODEL
    [message] = body["messages"]
    image = next(p["image_url"]["url"] for p in message["content"] if p["type"] == "image_url")
    assert image.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(image.split(",", 1)[1]) == _thumbnail()
    assert any("HELLO" in p.get("text", "") for p in message["content"])  # the OCR text as a hint
    schema = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema" and schema["name"] == "VisionOutput"
    assert {"description", "tags", "confidence"} <= set(schema["schema"]["properties"])


def test_a_rate_limit_is_retried_then_succeeds():
    with ScriptedServer([error_answer(429, "rate limited"), json_chat_answer(GOOD)]) as server:
        output = _provider(server).describe(_context())
    assert output.confidence == 0.92 and len(server.requests) == 2


def test_server_errors_until_the_attempts_run_out_give_a_reason():
    with ScriptedServer([error_answer(503, "upstream overloaded")]) as server, \
            pytest.raises(VisionError, match="HTTP 503: upstream overloaded"):
        _provider(server, attempts=2).describe(_context())
    assert len(server.requests) == 2


@pytest.mark.parametrize("answer,reason", [
    (chat_answer("a cat, probably"), "does not match the schema"),
    (json_chat_answer({"description": "", "tags": [], "confidence": 3}), "does not match the schema"),
    (chat_answer(None, refusal="I can't help with that image."), "refused: I can't help"),
    (chat_answer(None, finish="content_filter"), "content_filter"),
    (error_answer(400, "model does not support images"), "HTTP 400: model does not support images"),
])
def test_bad_answers_become_a_vision_error_with_the_reason(answer, reason):
    with ScriptedServer([answer]) as server, pytest.raises(VisionError, match=reason):
        _provider(server).describe(_context())
    assert len(server.requests) == 1  # not retried: asking again would answer the same


def test_json_in_a_code_fence_is_read_and_text_is_transcribed():
    fenced = "```json\n" + '{"text": "SORTIE\\nÉglise", "language": "fr"}' + "\n```"
    with ScriptedServer([chat_answer(fenced)]) as server:
        reading = _provider(server).read_text(_thumbnail())
    assert reading.text == "SORTIE\nÉglise" and reading.language == "fr"


def test_the_settings_select_openrouter_for_the_pipeline_and_the_api(tmp_path):
    settings = ImagoSettings(home=tmp_path, vision_provider="openrouter", openrouter_api_key="test-key",
                             openrouter_model=MODEL, vision_attempts=1)
    assert provider_model(settings) == f"openrouter:{MODEL}"
    with ScriptedServer([json_chat_answer(GOOD), json_chat_answer({"sentences": ["It is a test."]})]) as server:
        configured = settings.model_copy(update={"openrouter_base_url": server.url})
        provider = build_provider(configured)
        assert provider.name == f"openrouter:{MODEL}" and provider.remote
        assert provider.describe(_context()).confidence == 0.92
        texts = text_provider(configured)
        assert isinstance(texts, RemoteTextProvider)
        assert texts.summarize("It is a test. Nothing else.", 1).sentences == ["It is a test."]
    with pytest.raises(VisionError, match="IMAGO_OPENROUTER_API_KEY"):
        build_provider(settings.model_copy(update={"openrouter_api_key": None}))


def test_the_key_is_not_in_the_settings_dagster_shows_and_comes_from_the_environment(tmp_path, monkeypatch):
    from imago_pipeline.defs.resources import SettingsResource

    monkeypatch.setenv("IMAGO_OPENROUTER_API_KEY", "sk-or-secret")
    settings = ImagoSettings(home=tmp_path, vision_provider="openrouter")
    resource = SettingsResource.of(settings)
    assert "sk-or-secret" not in resource.values and "openrouter_api_key" not in resource.values
    assert resource.openrouter_api_key.env_var_name == "IMAGO_OPENROUTER_API_KEY"  # read when a run starts


def test_the_original_services_ai_provider_variable_chooses_the_provider_too(monkeypatch):
    monkeypatch.delenv("IMAGO_VISION_PROVIDER", raising=False)
    monkeypatch.setenv("AI_PROVIDER", "openrouter")
    assert ImagoSettings().vision_provider == "openrouter"
    monkeypatch.setenv("IMAGO_VISION_PROVIDER", "gemini")  # Imago's own name wins when both are set
    assert ImagoSettings().vision_provider == "gemini"
    monkeypatch.setenv("IMAGO_VISION_PROVIDER", "gpt")
    with pytest.raises(ValueError):
        ImagoSettings()
