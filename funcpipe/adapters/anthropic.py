"""Anthropic's Messages API: ``POST /v1/messages`` (generation only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from funcpipe.adapters.config import AnthropicConfig
from funcpipe.adapters.http import HTTPAdapter, malformed, report_generation
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrInfo, Ok, Result
from funcpipe.ports import Generation, QueryHit

PROVIDER = "anthropic"


def parse_message(payload: object) -> Result[Generation, ErrInfo]:
    """The `Generation` of a Messages API response: its text blocks joined, and its usage."""
    content = payload.get("content") if isinstance(payload, Mapping) else None
    if not isinstance(content, list):
        return Err(malformed(PROVIDER, "no 'content' blocks in the message"))
    assert isinstance(payload, Mapping)
    texts: list[str] = []
    for block in content:
        if isinstance(block, Mapping) and block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str):
                return Err(malformed(PROVIDER, "a text block has no text"))
            texts.append(text)
    usage = payload.get("usage")
    tokens: dict[str, int] = {}
    if isinstance(usage, Mapping):
        for key in ("input_tokens", "output_tokens"):
            value = usage.get(key)
            if type(value) is int:
                tokens[key] = value
    meta = {k: v for k in ("model", "id", "stop_reason") if isinstance(v := payload.get(k), str)}
    return Ok(Generation(text="".join(texts), usage=tokens, meta=meta))


class AnthropicAdapter(HTTPAdapter):
    """Generation over Anthropic's Messages API (`GeneratePort`).

    The key goes in ``x-api-key`` and every request names its
    ``anthropic-version``. A 529 (overloaded) is ``TRANSIENT`` like any 5xx.
    """

    provider = PROVIDER

    def __init__(self, config: AnthropicConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self.config = config

    def auth_headers(self, key: str) -> dict[str, str]:
        """``x-api-key``."""
        return {"x-api-key": key}

    def fixed_headers(self) -> dict[str, str]:
        """``anthropic-version``."""
        return {"anthropic-version": self.config.anthropic_version}

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Answer the rendered ``prompt`` as a single user message (``question`` and ``hits`` are in it)."""
        body: dict[str, object] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "messages": [{"role": "user", "content": prompt}],
        }

        async def run() -> Result[Generation, ErrInfo]:
            answer = await self.post("v1/messages", body)
            if isinstance(answer, Err):
                return answer
            return report_generation(parse_message(answer.value))

        return run


def create(config: AnthropicConfig, resources: Resources) -> AnthropicAdapter:
    """The ``anthropic`` adapter factory."""
    return AnthropicAdapter(config, resources)
