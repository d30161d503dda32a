"""What the text providers answer: a summary, a task draft (also the JSON schemas sent to a remote model)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, field_validator


def _clean_lines(lines: list[str]) -> list[str]:
    cleaned = (" ".join(line.split()) for line in lines)
    return list(dict.fromkeys(line for line in cleaned if line))


class Summary(BaseModel):
    """A summary of a text as a few sentences; also the JSON schema sent to Gemini."""

    sentences: list[str] = Field(min_length=1, max_length=10,
                                 description="The summary, one sentence per item, in the order of the text.")

    @field_validator("sentences")
    @classmethod
    def _clean_sentences(cls, sentences: list[str]) -> list[str]:
        cleaned = _clean_lines(sentences)
        if not cleaned:
            raise ValueError("the summary has no sentence")
        return cleaned


class TaskDraft(BaseModel):
    """A task drafted from a free-form request; also the JSON schema sent to Gemini."""

    title: str = Field(min_length=1, max_length=120, description="A short imperative title, at most 80 characters.")
    description: str = Field(max_length=5000, description="The request, cleaned up.")
    priority: Literal["low", "medium", "high"] = Field(description="How urgent the request says it is.")
    due_date: date | None = Field(default=None, description="The deadline as an ISO date, null when none is given.")
    tags: list[str] = Field(max_length=8, description="Up to 8 short lowercase topic words.")
    checklist: list[str] = Field(max_length=20, description="The steps, one per item, in order.")

    @field_validator("title", "description")
    @classmethod
    def _clean_text(cls, text: str) -> str:
        return text.strip()

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        return _clean_lines([t.lower()[:64] for t in tags])

    @field_validator("checklist")
    @classmethod
    def _clean_checklist(cls, items: list[str]) -> list[str]:
        return _clean_lines(items)
