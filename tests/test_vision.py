"""Vision providers: the real google-genai client against a local generateContent server, and the local one."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imago_pipeline.core.vision.base import VisionContext, VisionError
from imago_pipeline.core.vision.gemini import GeminiClient
from imago_pipeline.core.vision.local import LocalVisionProvider
from imago_pipeline.core.vision.remote import RemoteVisionProvider
from tests.conftest import SAMPLES
from tests.gemini_server import GeminiProtocolServer, blocked_answer, error_answer, json_answer, text_answer

GOOD = {"description": "A green iguana's head in profile.", "tags": ["Iguana", "reptile", "green", "iguana"],
        "confidence": 0.92}


def _thumbnail(name="Canon_40D.jpg") -> bytes:
    image = Image.open(SAMPLES / name).convert("RGB")
    image.thumbnail((256, 256))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


def _context(**extra) -> VisionContext:
    return VisionContext(image_jpeg=_thumbnail(), width=100, height=68, **extra)


def _provider(server, attempts=3) -> RemoteVisionProvider:
    return RemoteVisionProvider(GeminiClient(api_key="test-key", model="gemini-2.5-flash", base_url=server.url,
                                             attempts=attempts, initial_delay=0.01, max_delay=0.05, timeout_s=10))


def test_success_sends_the_image_and_the_schema_and_validates_the_answer():
    with GeminiProtocolServer([json_answer(GOOD)]) as server:
        output = _provider(server).describe(_context(has_text=True, ocr_text="HELLO"))
    assert output.description == GOOD["description"] and output.confidence == 0.92
    assert output.tags == ["iguana", "reptile", "green"]  # normalised and de-duplicated
    request = server.requests[0]
    assert request["path"].endswith("/models/gemini-2.5-flash:generateContent")
    assert request["headers"].get("x-goog-api-key") == "test-key"
    parts = request["body"]["contents"][0]["parts"]
    image = next(p["inlineData"] for p in parts if "inlineData" in p)
    assert image.get("mimeType", image.get("mime_type")) == "image/jpeg"
    data = image["data"] + "=" * (-len(image["data"]) % 4)
    assert base64.b64decode(data, altchars=b"-_") == _thumbnail()
    assert any("HELLO" in p.get("text", "") for p in parts)  # OCR text is given as a hint
    config = request["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    assert {"description", "tags", "confidence"} <= set(schema["properties"])


def test_rate_limit_is_retried_then_succeeds():
    with GeminiProtocolServer([error_answer(429, "RESOURCE_EXHAUSTED"), json_answer(GOOD)]) as server:
        output = _provider(server).describe(_context())
    assert output.tags[0] == "iguana" and len(server.requests) == 2


def test_server_errors_are_retried_until_attempts_run_out():
    with GeminiProtocolServer([error_answer(500, "INTERNAL")]) as server, pytest.raises(VisionError, match="HTTP 500"):
        _provider(server, attempts=3).describe(_context())
    assert len(server.requests) == 3


def test_a_client_error_is_not_retried():
    with GeminiProtocolServer([error_answer(400, "INVALID_ARGUMENT")]) as server, \
            pytest.raises(VisionError, match="HTTP 400"):
        _provider(server).describe(_context())
    assert len(server.requests) == 1


@pytest.mark.parametrize("answer", [text_answer("{not json"), json_answer({"description": "x", "tags": "no"}),
                                    json_answer({"description": "", "tags": [], "confidence": 3})])
def test_output_that_does_not_match_the_schema_is_an_error(answer):
    with GeminiProtocolServer([answer]) as server, pytest.raises(VisionError, match="does not match the schema"):
        _provider(server).describe(_context())


def test_a_blocked_answer_is_an_error_with_the_reason():
    with GeminiProtocolServer([blocked_answer()]) as server, pytest.raises(VisionError, match=r"blocked.*SAFETY"):
        _provider(server).describe(_context())


def test_a_safety_stop_without_content_is_an_error():
    with GeminiProtocolServer([text_answer("", finish="SAFETY")]) as server, pytest.raises(VisionError, match="SAFETY"):
        _provider(server).describe(_context())


def test_read_text_returns_the_transcription():
    with GeminiProtocolServer([json_answer({"text": "Bonjour\nle monde", "language": "fr"})]) as server:
        reading = _provider(server).read_text(_thumbnail())
    assert reading.text == "Bonjour\nle monde" and reading.language == "fr"


def test_missing_api_key_is_a_clear_error():
    with pytest.raises(VisionError, match="API key"):
        RemoteVisionProvider(GeminiClient(api_key="", model="gemini-2.5-flash"))


def test_local_provider_describes_only_what_it_measured():
    provider = LocalVisionProvider()
    exif = {"make": "Apple", "model": "iPhone 6", "datetime_original": "2015-04-10T20:12:23",
            "gps_latitude": 40.4, "gps_longitude": -3.7}
    photo = provider.describe(VisionContext(image_jpeg=_thumbnail("iphone_hdr_YES.jpg"), width=3264, height=2448,
                                            exif=exif))
    assert {"landscape", "apple", "geotagged"} <= set(photo.tags) and "text" not in photo.tags
    assert "iPhone 6" in photo.description and "2015-04-10" in photo.description
    page = provider.describe(VisionContext(image_jpeg=_thumbnail("phototest.tif"), width=640, height=480,
                                           ocr_text="This is a lot of 12 point text", ocr_language="en",
                                           has_text=True))
    assert {"text", "english", "white"} <= set(page.tags) and "document" in page.description
    assert provider.name == "local-content-v2"


def test_local_provider_says_what_the_backbone_sees_and_lets_the_head_decide_about_pets():
    provider = LocalVisionProvider()
    thumb = _thumbnail("iphone_hdr_YES.jpg")
    tabby = provider.describe(VisionContext(image_jpeg=thumb, width=400, height=300,
                                            classification={"label": "cat", "probability": 0.97},
                                            imagenet=((281, 0.55), (282, 0.2), (285, 0.1), (207, 0.05))))
    assert tabby.tags[:2] == ["cat", "tabby"] and "golden retriever" not in tabby.tags
    assert tabby.description.startswith("A photo of a tabby cat;") and tabby.description.endswith("; no text.")
    assert tabby.confidence == 0.97
    beach = provider.describe(VisionContext(image_jpeg=thumb, width=400, height=300,
                                            classification={"label": "other", "probability": 0.99},
                                            imagenet=((978, 0.6), (977, 0.2), (207, 0.16))))
    # content tags first, by summed probability (scenery and beach 0.8, sea 0.6, sand 0.2), then colours
    assert beach.tags[:4] == ["scenery", "beach", "sea", "sand"] and len(beach.tags) > 4
    assert beach.description.startswith("A photo of a beach")
    assert not {"dog", "golden retriever"} & set(beach.tags)  # the head said no pet: no pet tag
    unsure = provider.describe(VisionContext(image_jpeg=thumb, width=400, height=300,
                                             imagenet=((900, 0.05), (901, 0.04))))
    assert unsure.description.startswith("A photo;") and unsure.confidence == 0.3


def _prompt(body: dict) -> str:
    return " ".join(p.get("text", "") for p in body["contents"][0]["parts"])


def test_pipeline_with_gemini_records_blocks_per_image_and_uses_the_ocr_fallback(catalog, settings,
                                                                                dagster_instance):
    from imago_pipeline.core.ingest import register_image
    from imago_pipeline.core.stores.blobs import LocalBlobStore
    from imago_pipeline.in_process import process_images

    def respond(body):
        prompt = _prompt(body)
        if "Transcribe" in prompt:
            return json_answer({"text": "text read by the model", "language": "en"})
        if "model" in prompt and "read" in prompt:  # the page whose (fallback) text is in the hint: refuse it
            return blocked_answer()
        return json_answer(GOOD)

    with GeminiProtocolServer(responder=respond) as server:
        gemini = settings.model_copy(update={
            "vision_provider": "gemini", "gemini_api_key": "k", "gemini_base_url": server.url,
            "vision_attempts": 2, "vision_initial_delay_s": 0.01, "ocr_fallback_confidence": 101.0})
        tenant = catalog.clients.get_or_create("t")
        store = LocalBlobStore(gemini.blob_root)
        ids = {name: register_image(catalog, store, gemini, tenant_id=tenant.id, filename=name,
                                    data=(SAMPLES / name).read_bytes(), status="queued").image.id
               for name in ("Canon_40D.jpg", "phototest.tif")}
        runs = process_images(sorted(ids.values()), settings=gemini, instance=dagster_instance)
    assert runs[0].success
    scoped = catalog.for_tenant(tenant.id)
    page = scoped.get_ocr(ids["phototest.tif"])
    assert page.engine == "gemini:gemini-2.5-flash" and page.text == "text read by the model"
    assert scoped.get_ocr(ids["Canon_40D.jpg"]).engine == "rapidocr"  # a photo, no text: no fallback
    photo = scoped.get_vision(ids["Canon_40D.jpg"])
    assert photo.model_used == "gemini:gemini-2.5-flash" and photo.tags == ["iguana", "reptile", "green"]
    stages = {s.stage: s for s in scoped.get_stages(ids["phototest.tif"])}
    assert stages["vision"].status == "failed" and "blocked" in stages["vision"].error
    images = catalog.work.images_by_id(ids.values())
    assert images[ids["phototest.tif"]].status == "failed" and images[ids["Canon_40D.jpg"]].status == "done"
    assert stages["vision"].code_version == "vision-v1|gemini:gemini-2.5-flash|prompt-v1"
