"""The one place that turns the settings into a vision provider, for the pipeline and the API."""

from __future__ import annotations

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.vision.base import VisionProvider
from imago_pipeline.core.vision.local import LocalVisionProvider


def provider_model(settings: ImagoSettings) -> str:
    """The provider and model that describe images (part of the vision stage's code version)."""
    if settings.vision_provider == "gemini":
        return f"gemini:{settings.gemini_model}"
    if settings.vision_provider == "openrouter":
        return f"openrouter:{settings.openrouter_model}"
    return LocalVisionProvider.name


def remote_client(settings: ImagoSettings):
    """The configured hosted model's client (Gemini or OpenRouter; the SDK loads only when it is used)."""
    if settings.vision_provider == "openrouter":
        from imago_pipeline.core.vision.openrouter import OpenRouterClient

        return OpenRouterClient(api_key=settings.openrouter_api_key or "", model=settings.openrouter_model,
                                base_url=settings.openrouter_base_url, attempts=settings.vision_attempts)
    from imago_pipeline.core.vision.gemini import GeminiClient

    return GeminiClient(api_key=settings.gemini_api_key or "", model=settings.gemini_model,
                        base_url=settings.gemini_base_url, attempts=settings.vision_attempts,
                        initial_delay=settings.vision_initial_delay_s)


def build_provider(settings: ImagoSettings) -> VisionProvider:
    if settings.vision_provider == "local":
        return LocalVisionProvider()
    from imago_pipeline.core.vision.remote import RemoteVisionProvider

    return RemoteVisionProvider(remote_client(settings))
