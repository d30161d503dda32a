"""The one place that turns the `vision_provider` setting into a provider, for the pipeline and the API."""

from __future__ import annotations

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.vision.base import VisionProvider
from imago_pipeline.core.vision.local import LocalVisionProvider


def build_provider(kind: str, *, gemini_model: str, gemini_api_key: str, gemini_base_url: str | None = None,
                   attempts: int = 4, initial_delay_s: float = 1.0) -> VisionProvider:
    if kind == "gemini":
        from imago_pipeline.core.vision.gemini import GeminiVisionProvider  # the SDK loads only when it is used

        return GeminiVisionProvider(api_key=gemini_api_key, model=gemini_model, base_url=gemini_base_url,
                                    attempts=attempts, initial_delay=initial_delay_s)
    return LocalVisionProvider()


def provider_from_settings(settings: ImagoSettings) -> VisionProvider:
    return build_provider(settings.vision_provider, gemini_model=settings.gemini_model,
                          gemini_api_key=settings.gemini_api_key or "", gemini_base_url=settings.gemini_base_url,
                          attempts=settings.vision_attempts, initial_delay_s=settings.vision_initial_delay_s)
