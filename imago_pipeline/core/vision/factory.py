"""The one place that turns the settings into a vision provider, for the pipeline and the API."""

from __future__ import annotations

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.vision.base import VisionProvider
from imago_pipeline.core.vision.local import LocalVisionProvider


def provider_model(settings: ImagoSettings) -> str:
    """The provider and model that describe images (part of the vision stage's code version)."""
    return LocalVisionProvider.name if settings.vision_provider == "local" else f"gemini:{settings.gemini_model}"


def gemini_client(settings: ImagoSettings):
    """The configured Gemini client (the SDK loads only when it is used)."""
    from imago_pipeline.core.vision.gemini import GeminiClient

    return GeminiClient(api_key=settings.gemini_api_key or "", model=settings.gemini_model,
                        base_url=settings.gemini_base_url, attempts=settings.vision_attempts,
                        initial_delay=settings.vision_initial_delay_s)


def build_provider(settings: ImagoSettings) -> VisionProvider:
    if settings.vision_provider == "gemini":
        from imago_pipeline.core.vision.gemini import GeminiVisionProvider

        return GeminiVisionProvider(gemini_client(settings))
    return LocalVisionProvider()
