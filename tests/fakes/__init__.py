"""Faithful local provider servers and a fake `Resources`, for tests of HTTP adapters."""

from __future__ import annotations

from tests.fakes.resources import FakeResources, local_client
from tests.fakes.servers import (
    EMBED_FAULT_CODES,
    FAULT_CODES,
    AnthropicServer,
    CohereServer,
    EmbedFn,
    FakeServer,
    Fault,
    OllamaServer,
    OpenAIServer,
    Recorded,
    Reply,
    ReplyFn,
    echo_reply,
    hashing_embed,
)

__all__ = [
    "EMBED_FAULT_CODES",
    "FAULT_CODES",
    "AnthropicServer",
    "CohereServer",
    "EmbedFn",
    "FakeResources",
    "FakeServer",
    "Fault",
    "OllamaServer",
    "OpenAIServer",
    "Recorded",
    "Reply",
    "ReplyFn",
    "echo_reply",
    "hashing_embed",
    "local_client",
]
