"""OpenAI-compatible API: ``/embeddings`` and ``/chat/completions``.

The same wire format is served by OpenAI, vLLM, LM Studio, Ollama's ``/v1``,
Together and others, so one adapter covers them all; ``base_url`` picks the
server. Embeddings are requested base64-encoded by default: a quarter of the
bytes of the JSON floats and decoded in C.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from funcpipe.adapters.config import OpenAIConfig
from funcpipe.adapters.http import (
    HTTPEmbedder,
    check_vectors,
    malformed,
    report_generation,
)
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrInfo, Ok, Result, report_usage
from funcpipe.ports import Generation, Purpose, QueryHit

KNOWN_DIMENSIONS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Native dimension of OpenAI's embedding models; any other model needs ``dimensions:``."""

PROVIDER = "openai"


def decode_base64_f32(data: str) -> list[float] | None:
    """The little-endian float32 vector encoded in ``data``, or None if it is not one."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) % 4:
        return None
    vector = array("f")
    vector.frombytes(raw)
    if sys.byteorder == "big":
        vector.byteswap()
    return vector.tolist()


def parse_embeddings(payload: object, *, count: int, dim: int) -> Result[list[list[float]], ErrInfo]:
    """The vectors of an embeddings response, in input order (by ``index``), checked.

    Accepts each ``embedding`` as a float list or a base64 string whatever was
    asked, because some compatible servers ignore ``encoding_format``.
    """
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, list):
        return Err(malformed(PROVIDER, "no 'data' list in the embeddings response"))
    if len(data) != count:
        return Err(malformed(PROVIDER, f"expected {count} embeddings, got {len(data)}", expected=count, got=len(data)))
    rows: list[Any] = [None] * count
    for entry in data:
        index = entry.get("index") if isinstance(entry, Mapping) else None
        if type(index) is not int or not 0 <= index < count or rows[index] is not None:
            return Err(malformed(PROVIDER, f"embedding indices are not 0..{count - 1} each once (saw {index!r})"))
        vector = entry.get("embedding")
        if isinstance(vector, str):
            decoded = decode_base64_f32(vector)
            if decoded is None:
                return Err(malformed(PROVIDER, f"embedding {index} is not base64 float32 data"))
            vector = decoded
        rows[index] = vector
    return check_vectors(rows, count=count, dim=dim, provider=PROVIDER)


def reported_tokens(payload: object) -> int | None:
    """The input tokens an embeddings response says it billed (``usage.prompt_tokens``), if it says."""
    usage = payload.get("usage") if isinstance(payload, Mapping) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    return tokens if type(tokens) is int and tokens >= 0 else None


def parse_chat(payload: object) -> Result[Generation, ErrInfo]:
    """The `Generation` of a chat completion response."""
    choices = payload.get("choices") if isinstance(payload, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return Err(malformed(PROVIDER, "no 'choices' in the chat completion"))
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, Mapping) else None
        return Err(
            malformed(
                PROVIDER,
                "the chat completion has no text content",
                finish_reason=choice.get("finish_reason"),
                refusal=refusal if isinstance(refusal, str) else None,
            )
        )
    assert isinstance(payload, Mapping)
    usage = payload.get("usage")
    tokens: dict[str, int] = {}
    if isinstance(usage, Mapping):
        for ours, theirs in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
            value = usage.get(theirs)
            if type(value) is int:
                tokens[ours] = value
    meta = {
        k: v
        for k, v in (
            ("model", payload.get("model")),
            ("id", payload.get("id")),
            ("finish_reason", choice.get("finish_reason")),
        )
        if isinstance(v, str)
    }
    return Ok(Generation(text=content, usage=tokens, meta=meta))


class OpenAIAdapter(HTTPEmbedder):
    """Embeddings and chat over an OpenAI-compatible API (`EmbedPort` and `GeneratePort`).

    The fingerprint's dimension is ``dimensions`` when set, else the model's
    native size from `KNOWN_DIMENSIONS`; for any other model, reading
    ``fingerprint`` raises a `funcpipe.errors.SpecError` asking for
    ``dimensions:`` (chat-only use never needs it).
    """

    provider = PROVIDER

    def __init__(self, config: OpenAIConfig, resources: Resources) -> None:
        dim = config.dimensions or KNOWN_DIMENSIONS.get(config.model)
        super().__init__(config, resources, model=config.model, dim=dim, max_batch=config.max_batch)
        self.config = config

    async def _embed(self, texts: list[str], purpose: Purpose, dim: int) -> Result[list[list[float]], ErrInfo]:
        # OpenAI embeddings have no purpose: it is ignored.
        body: dict[str, object] = {
            "model": self.config.model,
            "input": texts,
            "encoding_format": self.config.encoding_format,
        }
        if self.config.dimensions is not None:
            body["dimensions"] = self.config.dimensions
        answer = await self.post("embeddings", body)
        if isinstance(answer, Err):
            return answer
        tokens = reported_tokens(answer.value)
        if tokens is not None:
            report_usage(input_tokens=tokens)
        return parse_embeddings(answer.value, count=len(texts), dim=dim)

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Answer the rendered ``prompt`` as a single user message (``question`` and ``hits`` are in it)."""
        body: dict[str, object] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            self.config.max_tokens_param: self.config.max_tokens,
            "temperature": self.config.temperature,
        }

        async def run() -> Result[Generation, ErrInfo]:
            answer = await self.post("chat/completions", body)
            if isinstance(answer, Err):
                return answer
            return report_generation(parse_chat(answer.value))

        return run


def create(config: OpenAIConfig, resources: Resources) -> OpenAIAdapter:
    """The ``openai`` adapter factory."""
    return OpenAIAdapter(config, resources)
