"""Answers in OpenRouter's (OpenAI-compatible) chat-completions protocol, for the scripted local server of
`gemini_server.py`: the real `openai` client talks to it as it would to https://openrouter.ai/api/v1."""

from __future__ import annotations

import json


def chat_answer(content: str | None, finish: str = "stop", refusal: str | None = None) -> tuple[int, dict]:
    return 200, {"id": "gen-test", "object": "chat.completion", "created": 1_800_000_000,
                 "model": "google/gemini-2.5-flash", "provider": "Google",
                 "choices": [{"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": content, "refusal": refusal}}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def json_chat_answer(payload: dict) -> tuple[int, dict]:
    return chat_answer(json.dumps(payload))


def error_answer(code: int, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message}}
