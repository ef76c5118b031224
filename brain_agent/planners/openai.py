"""The ``openai`` planner: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, ...).

It POSTs ``{endpoint}/chat/completions`` with the scene-tightened GoalSet JSON Schema as
``response_format`` (``{"type": "json_schema", ...}``), so a server with structured outputs
answers valid JSON; validation and feedback retries are the same as the local ``llm`` planner's.

Options, each with an env default: ``endpoint`` (``ROBOBUS_OPENAI_BASE_URL``, default
``http://127.0.0.1:8000/v1``), ``model`` (``ROBOBUS_OPENAI_MODEL``, default ``default``),
``timeout_s``, ``max_attempts``. The API key is read from ``ROBOBUS_OPENAI_API_KEY`` at
request time and is never logged. Standard library only (urllib).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import structlog

from robobus.brain_agent.llm.errors import EndpointError
from robobus.brain_agent.llm.planning import ModelPlanner

log = structlog.get_logger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"
KEY_ENV = "ROBOBUS_OPENAI_API_KEY"


class OpenAIPlanner(ModelPlanner):
    """Instruction -> GoalSet by an OpenAI-compatible endpoint with JSON-Schema outputs."""

    name = "openai"

    def __init__(self, endpoint: str | None = None, model: str | None = None, *,
                 timeout_s: float = 60.0, max_attempts: int = 3, max_new_tokens: int = 300,
                 grammar_first: bool = True) -> None:
        super().__init__(max_attempts=max_attempts, max_new_tokens=max_new_tokens,
                         grammar_first=grammar_first)
        base = endpoint or os.environ.get("ROBOBUS_OPENAI_BASE_URL") or DEFAULT_ENDPOINT
        self.endpoint = base.rstrip("/")
        self.model = model or os.environ.get("ROBOBUS_OPENAI_MODEL") or "default"
        self.timeout_s = timeout_s

    def request_body(self, messages: list[dict[str, str]], schema: dict[str, Any],
                     temperature: float = 0.0) -> dict[str, Any]:
        """The chat-completions request for ``messages`` constrained to ``schema``."""
        return {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.max_new_tokens,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "GoalSet", "schema": schema, "strict": True}},
        }

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                 temperature: float = 0.0) -> str:
        url = f"{self.endpoint}/chat/completions"
        body = json.dumps(self.request_body(messages, schema, temperature)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key := os.environ.get(KEY_ENV):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise EndpointError(f"{url} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise EndpointError(f"{url} unreachable: {getattr(exc, 'reason', exc)}") from exc
        return _content(payload, url)


def _content(payload: bytes, url: str) -> str:
    """``choices[0].message.content`` of a chat-completions answer."""
    try:
        answer = json.loads(payload)
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EndpointError(f"{url} answered something that is not a chat completion: "
                            f"{payload[:200]!r}") from exc
    if not isinstance(content, str):
        raise EndpointError(f"{url} answered a completion without text content")
    return content
