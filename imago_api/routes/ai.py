"""AI utility endpoints: summarise a web page, draft a task from a request. The configured provider
(`IMAGO_VISION_PROVIDER`) answers both; the fetching, its limits and the providers live in `imago_api.ai`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from imago_api.ai.extract import NoText, extract_text
from imago_api.ai.fetch import (
    FetchFailed,
    FetchLimits,
    FetchTimeout,
    PageTooLarge,
    TooManyRedirects,
    UnsupportedContent,
    UrlNotAllowed,
    fetch_page,
)
from imago_api.ai.models import TaskDraft
from imago_api.ai.providers import TextProvider, text_provider
from imago_api.deps import SettingsDep, require_scope
from imago_api.errors import AUTHENTICATED, ApiError, ErrorOut, responses
from imago_pipeline.core.vision.base import VisionError

router = APIRouter(prefix="/ai", tags=["ai"], responses=responses(*AUTHENTICATED))

USE = require_scope("ai:use")

# Each failure of a fetch, mapped once to a status and a code.
FETCH_ERRORS: dict[type[Exception], tuple[int, str]] = {
    UrlNotAllowed: (400, "url_not_allowed"),
    UnsupportedContent: (422, "unsupported_content"),
    PageTooLarge: (422, "page_too_large"),
    NoText: (422, "no_text"),
    FetchFailed: (502, "fetch_failed"),
    TooManyRedirects: (502, "too_many_redirects"),
    FetchTimeout: (504, "fetch_timeout"),
}


class SummarizeIn(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="An http or https page (HTML or plain text).")
    max_sentences: int = Field(default=3, ge=1, le=10)
    language: Annotated[str, AfterValidator(str.lower)] | None = Field(
        default=None, pattern="^[A-Za-z]{2}$", description=(
        "Language of the summary (ISO 639-1, e.g. fr or FR). Hosted providers write in it; the offline provider "
        "extracts the page's own sentences, so its summary stays in the page's language."))


class SummaryOut(BaseModel):
    url: str = Field(description="The page summarised, after redirects.")
    title: str | None
    summary: str
    sentences: list[str]
    provider: str
    characters_read: int = Field(description="Characters of page text given to the provider.")
    truncated: bool = Field(description="The page text was longer than the provider is given (ai_text_max_chars).")


class DraftTaskIn(BaseModel):
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
    today: date | None = Field(default=None, description="Your local date, for relative due dates such as "
                               "'by Friday'; the server's date when absent.")
    context: Annotated[str | None, StringConstraints(strip_whitespace=True, max_length=5000)] = Field(
        default=None, description="What the task belongs to (a page, a project): read after the description")


class TaskDraftOut(TaskDraft):
    provider: str


def get_provider(settings: SettingsDep) -> TextProvider:
    try:
        return text_provider(settings)
    except VisionError as exc:  # misconfigured (e.g. gemini without a key): ours to fix, not the caller's
        raise ApiError(str(exc), code="provider_unavailable", status_code=503) from exc


ProviderDep = Annotated[TextProvider, Depends(get_provider)]


async def _ask(call: Callable[..., Any], *args: Any) -> Any:
    """A provider call off the event loop (Gemini blocks on the network, the local one on the CPU)."""
    try:
        return await run_in_threadpool(call, *args)
    except VisionError as exc:
        raise ApiError(str(exc), code="provider_failed", status_code=502) from exc


@router.post("/summarize", response_model=SummaryOut, dependencies=[USE],
             summary="Summarise a web page in a few sentences (scope ai:use)",
             responses={**responses(502, 504),
                        400: {"model": ErrorOut,
                              "description": "URL refused: scheme, or a private or internal address"},
                        422: {"model": ErrorOut, "description": "Not HTML or plain text, too large, or no text"}})
async def summarize(body: SummarizeIn, settings: SettingsDep, provider: ProviderDep) -> SummaryOut:
    """Fetch the page (http/https, at most `ai_fetch_max_bytes`, `ai_fetch_timeout_s` and
    `ai_fetch_max_redirects`, never a private or internal address), keep the text a person reads, and
    summarise it with the configured provider."""
    limits = FetchLimits(max_bytes=settings.ai_fetch_max_bytes, timeout_s=settings.ai_fetch_timeout_s,
                         max_redirects=settings.ai_fetch_max_redirects, allow_private=settings.ai_fetch_allow_private)
    try:
        page = await fetch_page(body.url, limits)
        text = await run_in_threadpool(extract_text, page.body, page.media_type, page.charset,
                                       max_chars=settings.ai_text_max_chars)
    except tuple(FETCH_ERRORS) as exc:
        status, code = FETCH_ERRORS[type(exc)]
        raise ApiError(str(exc), code=code, status_code=status) from exc
    summary = await _ask(provider.summarize, text.text, body.max_sentences, body.language)
    return SummaryOut(url=page.url, title=text.title, summary=" ".join(summary.sentences),
                      sentences=summary.sentences, provider=provider.name, characters_read=len(text.text),
                      truncated=text.truncated)


@router.post("/draft-task", response_model=TaskDraftOut, dependencies=[USE],
             summary="Draft a structured task from a request in plain words (scope ai:use)",
             responses=responses(502))
async def draft_task(body: DraftTaskIn, provider: ProviderDep) -> TaskDraftOut:
    """Title, priority, due date, tags and checklist, read from the request by the configured provider."""
    request = f"{body.description}\n\n{body.context}" if body.context else body.description
    draft = await _ask(provider.draft_task, request, body.today or date.today())
    return TaskDraftOut(**draft.model_dump(), provider=provider.name)
