"""Config models of the built-in adapters (the fields under ``adapters.<name>``).

Kept apart from the adapter implementations so that validating a spec
imports no HTTP or database client.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from funcpipe.policy.models import Duration

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class AdapterConfig(BaseModel):
    """Base of every adapter config: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(..., description="The adapter kind.")


class HashingConfig(AdapterConfig):
    """Local, deterministic feature-hashing embedder: no network, no model download."""

    kind: Literal["hashing"] = "hashing"
    dim: int = Field(384, ge=8, le=16000, description="Vector dimension.")
    char_ngrams: tuple[int, int] = Field((3, 5), description="Character n-gram sizes, inclusive range.")
    word_ngrams: int = Field(2, ge=1, le=3, description="Word n-grams up to this size (2 = unigrams and bigrams).")

    @field_validator("char_ngrams")
    @classmethod
    def _char_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi <= 10:
            raise ValueError(f"char_ngrams must be [lo, hi] with 1 <= lo <= hi <= 10, got [{lo}, {hi}]")
        return v


class _HTTPConfig(AdapterConfig):
    base_url: str = Field(..., description="Base URL of the API.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (no secrets).")
    request_timeout: Duration = Field(60.0, description="HTTP-level timeout for one request.")


class OpenAIConfig(_HTTPConfig):
    """OpenAI-compatible API (OpenAI, vLLM, LM Studio, Ollama's /v1, Together...): embeddings and chat."""

    kind: Literal["openai"] = "openai"
    model: str = Field(..., description="Model name, e.g. text-embedding-3-small or gpt-4o-mini.")
    base_url: str = Field(
        "https://api.openai.com/v1", description="Base URL; /embeddings and /chat/completions are appended."
    )
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    dimensions: int | None = Field(None, ge=1, description="Requested (and checked) embedding dimension.")
    encoding_format: Literal["base64", "float"] = Field("base64", description="base64 is smaller and faster to parse.")
    max_batch: int = Field(2048, ge=1, le=2048, description="Texts per embeddings request at most.")
    max_tokens: int = Field(512, ge=1, description="Chat: maximum tokens to generate.")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="Chat: the body field carrying max_tokens; OpenAI's reasoning models want max_completion_tokens.",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Chat: sampling temperature.")


class OllamaConfig(_HTTPConfig):
    """Ollama's native API: /api/embed and /api/chat."""

    kind: Literal["ollama"] = "ollama"
    model: str = Field(..., description="Model name, e.g. nomic-embed-text or llama3.2.")
    base_url: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    dimensions: int | None = Field(None, ge=1, description="Expected (and requested) embedding dimension.")
    truncate: bool = Field(True, description="Let the server truncate inputs longer than the context.")
    keep_alive: str | None = Field(None, description="How long the model stays loaded, e.g. 5m.")
    max_batch: int = Field(512, ge=1, description="Texts per request at most.")
    max_tokens: int = Field(512, ge=1, description="Chat: maximum tokens to generate (options.num_predict).")
    temperature: float = Field(0.0, ge=0, le=2, description="Chat: sampling temperature (options.temperature).")


class CohereConfig(_HTTPConfig):
    """Cohere v2 embed API."""

    kind: Literal["cohere"] = "cohere"
    model: str = Field("embed-v4.0", description="Model name.")
    base_url: str = Field("https://api.cohere.com", description="Base URL; /v2/embed is appended.")
    api_key_env: str | None = Field("CO_API_KEY", description="Environment variable holding the API key.")
    dimensions: int | None = Field(None, ge=1, description="output_dimension, where the model supports it.")
    embedding_types: tuple[Literal["float"], ...] = Field(("float",), description="Embedding types requested.")
    truncate: Literal["NONE", "START", "END"] = Field("END", description="Truncation of long inputs.")
    max_batch: int = Field(96, ge=1, le=96, description="Texts per request at most (Cohere allows 96).")


class AnthropicConfig(_HTTPConfig):
    """Anthropic Messages API (generation only)."""

    kind: Literal["anthropic"] = "anthropic"
    model: str = Field(..., description="Model name, e.g. claude-sonnet-4-5.")
    base_url: str = Field("https://api.anthropic.com", description="Base URL; /v1/messages is appended.")
    api_key_env: str | None = Field("ANTHROPIC_API_KEY", description="Environment variable holding the API key.")
    anthropic_version: str = Field("2023-06-01", description="The anthropic-version header.")
    max_tokens: int = Field(1024, ge=1, description="Maximum tokens to generate.")
    temperature: float = Field(0.0, ge=0, le=1, description="Sampling temperature.")


class PgvectorConfig(AdapterConfig):
    """PostgreSQL + pgvector. With no ``dsn``, an embedded server under ``.funcpipe/pgdata``."""

    kind: Literal["pgvector"] = "pgvector"
    dsn: str | None = Field(None, description="postgresql:// DSN; omit for the embedded server. Use ${DATABASE_URL}.")
    table: str = Field("chunks", description="Table name (an SQL identifier; it is quoted).")
    db_schema: str = Field("public", alias="schema", description="Schema name (an SQL identifier; it is quoted).")
    index: Literal["hnsw", "none"] = Field("hnsw", description="Approximate index on the vectors.")
    distance: Literal["cosine"] = Field("cosine", description="Distance used by queries and the index.")
    pool_max: int = Field(4, ge=1, le=64, description="Connections in the pool at most.")
    exact: bool = Field(False, description="Exact scan for queries (no index), ties broken by id.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("table", "db_schema")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError(
                f"{v!r} is not a plain SQL identifier: use letters, digits and _, starting with a letter or _, "
                "at most 63 characters"
            )
        return v


class MemoryConfig(AdapterConfig):
    """In-process vector store with the same contract as pgvector (tests, small corpora)."""

    kind: Literal["memory"] = "memory"


class ExtractiveConfig(AdapterConfig):
    """Offline answerer: returns the best passages with their sources and scores."""

    kind: Literal["extractive"] = "extractive"
    max_passages: int = Field(3, ge=1, description="Passages quoted in the answer.")
    max_chars: int = Field(600, ge=40, description="Characters quoted per passage at most.")


BUILTIN_ADAPTER_CONFIGS: dict[str, type[AdapterConfig]] = {
    "hashing": HashingConfig,
    "openai": OpenAIConfig,
    "ollama": OllamaConfig,
    "cohere": CohereConfig,
    "anthropic": AnthropicConfig,
    "pgvector": PgvectorConfig,
    "memory": MemoryConfig,
    "extractive": ExtractiveConfig,
}
