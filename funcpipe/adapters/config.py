"""Config models of the built-in adapters (the fields under ``adapters.<name>``).

Kept apart from the adapter implementations so that validating a spec
imports no HTTP or database client.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from funcpipe.policy.models import Duration, Float, Int, PositiveDuration, Price, RequestLimits

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# RFC 9110 token characters: what an HTTP header name may hold.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_POSTGRES_SCHEMES = ("postgres", "postgresql")

MAX_TOKENS = 1_000_000
"""Tokens a generation may ask for at most."""

MAX_DIMENSIONS = 65_536
"""Embedding dimension at most."""


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError("a header value cannot contain a line break or NUL")
    return value


def _model_name(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a model name cannot contain control characters")
    return value


ModelName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_model_name)]
"""A provider's model name: not empty, no control characters."""


def check_dsn(value: str) -> str:
    """Check a literal PostgreSQL DSN: ``postgresql://user@host:port/db`` or ``key=value`` pairs.

    The message never repeats the DSN: it may hold a password.

    Raises:
        ValueError: naming what is wrong, not the value.
    """
    if "${" in value or "{{" in value:
        # Still to be interpolated or rendered (only reachable when it was not).
        return value
    if any(ord(c) < 32 for c in value):
        raise ValueError("the DSN contains a control character or line break")
    if "://" not in value:
        # libpq's keyword form: host=... dbname=... ; every word is key=value.
        words = value.split()
        if not words or any("=" not in w or not w.split("=", 1)[0] for w in words):
            raise ValueError(
                "not a PostgreSQL DSN: write postgresql://user:password@host:5432/dbname, "
                "or key=value pairs (host=... dbname=...)"
            )
        return value
    scheme = value.split("://", 1)[0].lower()
    if scheme not in _POSTGRES_SCHEMES:
        raise ValueError("a DSN's scheme must be postgresql:// or postgres://")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("the DSN is not a valid URL (check the host and the port number)") from None
    # No host is allowed, as in libpq: the local socket (or PGHOST) is used.
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the DSN's port must be between 1 and 65535")
    return value


def env_fields(config: BaseModel) -> list[tuple[str, str]]:
    """The ``(field, variable)`` pairs of the ``*_env`` fields of ``config`` that name a variable.

    These are the variables the adapter reads when it runs (its API key,
    typically), with the config's defaults applied.
    """
    out: list[tuple[str, str]] = []
    for name in type(config).model_fields:
        value = getattr(config, name, None)
        if name.endswith("_env") and isinstance(value, str) and value:
            out.append((name, value))
    return out


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: traffic that never leaves the machine."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_key_transport(url: str) -> str | None:
    """The host an API key would travel to in clear over ``url``, or None if that is safe.

    Safe means ``https://`` (or another scheme), or plain ``http://`` to a
    loopback host.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return None  # not a URL at all: the request fails on its own, sending nothing
    if parts.scheme.lower() != "http" or is_loopback_host(host):
        return None
    return host or url


def refuse_key_in_clear(model: str, field: str, url: str | None, key_env: str | None, allowed: bool) -> None:
    """Refuse a config that would send the key in ``key_env`` over plain http to a host that is not loopback.

    Raises:
        ValidationError: located at ``field``, naming the host and the variable (never its value).
    """
    host = insecure_key_transport(url) if url and key_env and not allowed else None
    if host is None:
        return
    # Raised as a ValidationError so the error is located at the URL's field, not at the adapter.
    raise ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(
                type=PydanticCustomError(
                    "insecure_http",
                    "plain http:// to {host} would send the API key ({env}) in clear",
                    {
                        "host": host,
                        "env": key_env,
                        "hint": "use https://; or, on a trusted network, set `allow_insecure_http: true` "
                        "on this adapter; or `api_key_env: null` if the server needs no key",
                    },
                ),
                loc=(field,),
                input=url,
            )
        ],
    )


MAX_CHARS_PER_TOKEN = 100.0
"""Characters per token at most (no tokenizer packs more)."""


class AdapterConfig(BaseModel):
    """Base of every adapter config: frozen, unknown keys rejected.

    Every kind takes ``price`` and ``chars_per_token``: what its calls cost,
    and how its tokens are estimated where the provider does not count them
    (see docs/policies.md, Budgets and cost).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(..., description="The adapter kind.")
    price: Price | None = Field(
        None,
        description="USD per 1M input and output tokens and per request; overrides the shipped price table.",
    )
    chars_per_token: Float | None = Field(
        None,
        ge=1,
        le=MAX_CHARS_PER_TOKEN,
        description="Characters per token, for estimates where the provider reports no count (default 3.5).",
    )

    @property
    def request_limits(self) -> RequestLimits | None:
        """What one request to the provider may carry; None if the adapter declares nothing.

        Stages that fill requests (``embed``, with ``batch: {size: auto}``)
        batch up to these limits, and a larger ``batch.size`` is a spec error.
        """
        return None


class HashingConfig(AdapterConfig):
    """Local, deterministic feature-hashing embedder: no network, no model download."""

    kind: Literal["hashing"] = "hashing"
    dim: Int = Field(384, ge=8, le=16000, description="Vector dimension.")
    char_ngrams: tuple[Int, Int] = Field((3, 5), description="Character n-gram sizes, inclusive range.")
    word_ngrams: Int = Field(2, ge=1, le=3, description="Word n-grams up to this size (2 = unigrams and bigrams).")

    @field_validator("char_ngrams")
    @classmethod
    def _char_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi <= 10:
            raise ValueError(f"char_ngrams must be [lo, hi] with 1 <= lo <= hi <= 10, got [{lo}, {hi}]")
        return v


class WordLlamaConfig(AdapterConfig):
    """Local semantic embedder: WordLlama's static token vectors, shipped in its wheel; no network."""

    kind: Literal["wordllama"] = "wordllama"
    model: Literal["l2_supercat"] = Field("l2_supercat", description="The model: the weights the package ships.")
    dim: Literal[64, 128, 256] = Field(
        256, description="Vector dimension: the model's 256, or its first 128 or 64 (Matryoshka truncation)."
    )
    max_batch: Int = Field(256, ge=1, le=100_000, description="Texts embedded per call at most.")


class _HTTPConfig(AdapterConfig):
    base_url: str = Field(..., description="Base URL of the API.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    headers: dict[str, Annotated[str, Field(max_length=8192), AfterValidator(_header_value)]] = Field(
        default_factory=dict, max_length=100, description="Extra request headers (no secrets)."
    )
    request_timeout: PositiveDuration = Field(60.0, description="HTTP-level timeout for one request.")
    allow_insecure_http: bool = Field(
        False,
        description="Send the API key over plain http:// to a host that is not loopback (a trusted network only).",
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:60]!r} is not an HTTP header name: use letters, digits and -, e.g. X-Request-Source"
                )
        return v

    @model_validator(mode="after")
    def _key_in_clear(self) -> Self:
        refuse_key_in_clear(type(self).__name__, "base_url", self.base_url, self.api_key_env, self.allow_insecure_http)
        return self


class OpenAIConfig(_HTTPConfig):
    """OpenAI-compatible API (OpenAI, vLLM, LM Studio, Ollama's /v1, Together...): embeddings and chat."""

    kind: Literal["openai"] = "openai"
    model: ModelName = Field(..., description="Model name, e.g. text-embedding-3-small or gpt-4o-mini.")
    base_url: str = Field(
        "https://api.openai.com/v1", description="Base URL; /embeddings and /chat/completions are appended."
    )
    api_key_env: str | None = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    dimensions: Int | None = Field(
        None, ge=1, le=MAX_DIMENSIONS, description="Requested (and checked) embedding dimension."
    )
    encoding_format: Literal["base64", "float"] = Field("base64", description="base64 is smaller and faster to parse.")
    max_batch: Int = Field(2048, ge=1, le=2048, description="Texts per embeddings request at most.")
    max_request_tokens: Int = Field(
        300_000,
        ge=1,
        le=100_000_000,
        description="Estimated tokens per embeddings request at most (OpenAI allows 300000).",
    )
    max_tokens: Int = Field(512, ge=1, le=MAX_TOKENS, description="Chat: maximum tokens to generate.")
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="Chat: the body field carrying max_tokens; OpenAI's reasoning models want max_completion_tokens.",
    )
    temperature: Float = Field(0.0, ge=0, le=2, description="Chat: sampling temperature.")

    @property
    def request_limits(self) -> RequestLimits:
        """``max_batch`` inputs and ``max_request_tokens`` tokens per embeddings request."""
        return RequestLimits(inputs=self.max_batch, tokens=self.max_request_tokens)


class OllamaConfig(_HTTPConfig):
    """Ollama's native API: /api/embed and /api/chat."""

    kind: Literal["ollama"] = "ollama"
    model: ModelName = Field(..., description="Model name, e.g. nomic-embed-text or llama3.2.")
    base_url: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    dimensions: Int | None = Field(
        None, ge=1, le=MAX_DIMENSIONS, description="Expected (and requested) embedding dimension."
    )
    truncate: bool = Field(True, description="Let the server truncate inputs longer than the context.")
    keep_alive: str | None = Field(
        None,
        pattern=r"^-?[0-9]{1,12}(\.[0-9]{1,9})?(ns|us|ms|s|m|h)?$",
        description="How long the model stays loaded, e.g. 5m.",
    )
    max_batch: Int = Field(512, ge=1, le=100_000, description="Texts per request at most.")
    max_tokens: Int = Field(
        512, ge=1, le=MAX_TOKENS, description="Chat: maximum tokens to generate (options.num_predict)."
    )
    temperature: Float = Field(0.0, ge=0, le=2, description="Chat: sampling temperature (options.temperature).")

    @property
    def request_limits(self) -> RequestLimits:
        """``max_batch`` inputs per request (Ollama documents no bound; the server is usually local)."""
        return RequestLimits(inputs=self.max_batch)


class CohereConfig(_HTTPConfig):
    """Cohere v2 embed API."""

    kind: Literal["cohere"] = "cohere"
    model: ModelName = Field("embed-v4.0", description="Model name.")
    base_url: str = Field("https://api.cohere.com", description="Base URL; /v2/embed is appended.")
    api_key_env: str | None = Field("CO_API_KEY", description="Environment variable holding the API key.")
    dimensions: Int | None = Field(
        None, ge=1, le=MAX_DIMENSIONS, description="output_dimension, where the model supports it."
    )
    embedding_types: tuple[Literal["float"], ...] = Field(("float",), description="Embedding types requested.")
    truncate: Literal["NONE", "START", "END"] = Field("END", description="Truncation of long inputs.")
    max_batch: Int = Field(96, ge=1, le=96, description="Texts per request at most (Cohere allows 96).")

    @property
    def request_limits(self) -> RequestLimits:
        """``max_batch`` texts per request (Cohere's v2 embed takes 96)."""
        return RequestLimits(inputs=self.max_batch)


class AnthropicConfig(_HTTPConfig):
    """Anthropic Messages API (generation only)."""

    kind: Literal["anthropic"] = "anthropic"
    model: ModelName = Field(..., description="Model name, e.g. claude-sonnet-4-5.")
    base_url: str = Field("https://api.anthropic.com", description="Base URL; /v1/messages is appended.")
    api_key_env: str | None = Field("ANTHROPIC_API_KEY", description="Environment variable holding the API key.")
    anthropic_version: str = Field(
        "2023-06-01", pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="The anthropic-version header."
    )
    max_tokens: Int = Field(1024, ge=1, le=MAX_TOKENS, description="Maximum tokens to generate.")
    temperature: Float = Field(0.0, ge=0, le=1, description="Sampling temperature.")


class PgvectorConfig(AdapterConfig):
    """PostgreSQL + pgvector. With no ``dsn``, an embedded server under ``.funcpipe/pgdata``."""

    kind: Literal["pgvector"] = "pgvector"
    dsn: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_dsn)] | None = Field(
        None,
        description="postgresql:// DSN; omit for the embedded server. Use ${DATABASE_URL}.",
        # A DSN may carry a password: errors never show it.
        json_schema_extra={"writeOnly": True},
    )
    table: str = Field("chunks", description="Table name (an SQL identifier; it is quoted).")
    db_schema: str = Field("public", alias="schema", description="Schema name (an SQL identifier; it is quoted).")
    index: Literal["hnsw", "none"] = Field("hnsw", description="Approximate index on the vectors.")
    distance: Literal["cosine"] = Field("cosine", description="Distance used by queries and the index.")
    pool_max: Int = Field(4, ge=1, le=64, description="Connections in the pool at most.")
    exact: bool = Field(False, description="Exact scan for queries (no index), ties broken by id.")
    language: str = Field(
        "english",
        description="Text search configuration of the full-text column: english (stemming, stop words) "
        "or simple (lower-casing only: code, identifiers, mixed languages).",
    )
    rrf_k: Int = Field(60, ge=1, le=10_000, description="Hybrid search: the rank constant of reciprocal rank fusion.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("table", "db_schema", "language")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENT.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a plain SQL identifier: use letters, digits and _, starting with a letter or _, "
                "at most 63 characters"
            )
        return v


class MemoryConfig(AdapterConfig):
    """In-process vector store with the same contract as pgvector (tests, small corpora)."""

    kind: Literal["memory"] = "memory"
    rrf_k: Int = Field(60, ge=1, le=10_000, description="Hybrid search: the rank constant of reciprocal rank fusion.")


_QDRANT_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
# Chroma's own rule for collection names.
_CHROMA_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{1,510})[A-Za-z0-9]")
_LANCE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def _name_check(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value[:60]!r} is not a valid name here: use {rule}")
        return value

    return AfterValidator(check)


class _ServerStoreConfig(AdapterConfig):
    """A vector store that runs embedded under ``.funcpipe/`` unless a server is named."""

    api_key_env: str | None = Field(None, description="Environment variable holding the server's API key.")
    allow_insecure_http: bool = Field(
        False,
        description="Send the API key over plain http:// to a host that is not loopback (a trusted network only).",
    )
    request_timeout: PositiveDuration = Field(
        30.0, description="Timeout of one store call to a server (its requests together); none in embedded mode."
    )


class QdrantConfig(_ServerStoreConfig):
    """Qdrant. With no ``url``, Qdrant's local mode under ``.funcpipe/qdrant`` (one process at a time)."""

    kind: Literal["qdrant"] = "qdrant"
    collection: Annotated[str, _name_check(_QDRANT_NAME, "letters, digits, _ and -, at most 255")] = Field(
        "chunks", description="Collection name."
    )
    url: str | None = Field(None, description="Server URL, e.g. http://127.0.0.1:6333; omit for local mode.")

    @model_validator(mode="after")
    def _key_in_clear(self) -> Self:
        refuse_key_in_clear(type(self).__name__, "url", self.url, self.api_key_env, self.allow_insecure_http)
        return self


class ChromaConfig(_ServerStoreConfig):
    """Chroma. With no ``url``, a persistent client under ``.funcpipe/chroma``; telemetry is always off."""

    kind: Literal["chroma"] = "chroma"
    collection: Annotated[
        str, _name_check(_CHROMA_NAME, "3 to 512 letters, digits, ., _ and -, starting and ending alphanumeric")
    ] = Field("chunks", description="Collection name.")
    url: str | None = Field(None, description="Server URL, e.g. http://127.0.0.1:8000; omit for the embedded client.")
    tenant: str = Field("default_tenant", min_length=1, max_length=256, description="Server tenant.")
    database: str = Field("default_database", min_length=1, max_length=256, description="Server database.")

    @model_validator(mode="after")
    def _key_in_clear(self) -> Self:
        refuse_key_in_clear(type(self).__name__, "url", self.url, self.api_key_env, self.allow_insecure_http)
        return self


class LanceDBConfig(_ServerStoreConfig):
    """LanceDB. With no ``uri``, embedded under ``.funcpipe/lancedb``; keyword and hybrid ranking built in."""

    kind: Literal["lancedb"] = "lancedb"
    table: Annotated[str, _name_check(_LANCE_NAME, "letters, digits, _, - and ., at most 128")] = Field(
        "chunks", description="Table name."
    )
    uri: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="A directory, an object store (s3://...), or db://<name> for LanceDB Cloud; "
        "omit for the embedded database.",
    )
    region: str | None = Field(None, max_length=64, description="LanceDB Cloud region (db:// only).")
    host_override: str | None = Field(None, max_length=4096, description="LanceDB Enterprise server URL (db:// only).")

    @model_validator(mode="after")
    def _key_in_clear(self) -> Self:
        refuse_key_in_clear(
            type(self).__name__, "host_override", self.host_override, self.api_key_env, self.allow_insecure_http
        )
        return self


class ExtractiveConfig(AdapterConfig):
    """Offline answerer: returns the best passages with their sources and scores."""

    kind: Literal["extractive"] = "extractive"
    max_passages: Int = Field(3, ge=1, le=100, description="Passages quoted in the answer.")
    max_chars: Int = Field(600, ge=40, le=100_000, description="Characters quoted per passage at most.")


SCRIPTED_ANSWERS = ("ok", "timeout", "network", "malformed")
"""What a scripted step may answer besides an HTTP status."""


def _step_schema(schema: dict[str, Any]) -> None:
    # The shorthands (`ok`, `429`) are steps too: an editor must accept them.
    written = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description")}
    schema["anyOf"] = [
        {"enum": list(SCRIPTED_ANSWERS)},
        {"type": "integer", "minimum": 300, "maximum": 599},
        written,
    ]


class ScriptedStep(BaseModel):
    """One answer of a `ScriptedConfig` script: a success, a fault, or an HTTP error status.

    Written ``ok``, ``timeout``, ``network``, ``malformed``, a status such as
    ``429``, or a mapping such as ``{status: 429, retry_after: 30s, times: 10}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_step_schema)

    answer: Literal["ok", "timeout", "network", "malformed"] | None = Field(
        None,
        description="ok (the local answer), timeout, network (connection refused) "
        "or malformed (a 200 whose body is not JSON).",
    )
    status: Int | None = Field(None, ge=300, le=599, description="An HTTP error status to answer (429, 503...).")
    retry_after: Duration | None = Field(None, description="The Retry-After header sent with the status.")
    message: str | None = Field(None, max_length=1000, description="The provider's error message in the body.")
    delay: Duration = Field(0.0, description="How long the call takes before it answers (on the run's clock).")
    times: Int = Field(1, ge=1, le=100_000, description="How many calls in a row get this answer.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, str) and value in SCRIPTED_ANSWERS:
            return {"answer": value}
        if isinstance(value, int) and not isinstance(value, bool):
            return {"status": value}
        if isinstance(value, str | int | float | bool) or value is None:
            raise ValueError(
                f"a step is {', '.join(SCRIPTED_ANSWERS)}, an HTTP status such as 429, "
                f"or a mapping such as {{status: 429, retry_after: 30s}}, not {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _one_answer(self) -> Self:
        if (self.answer is None) == (self.status is None):
            raise ValueError("a step has either an answer (ok, timeout, network, malformed) or a status, not both")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after goes with a status (429 or 503)")
        return self


class ScriptedConfig(AdapterConfig):
    """Scripted fake of an HTTP provider for tests: answers, faults and error statuses in order, then ok."""

    kind: Literal["scripted"] = "scripted"
    provider: str = Field(
        "scripted", min_length=1, max_length=64, description="The provider named in its errors (openai, cohere...)."
    )
    script: list[ScriptedStep] = Field(
        default_factory=list, max_length=10_000, description="Answers to the calls in order; every later call is ok."
    )
    dim: Int = Field(384, ge=8, le=16000, description="Dimension of the vectors an ok answer holds (hashing).")
    max_batch: Int = Field(2048, ge=1, le=100_000, description="Texts per request at most, like the provider's limit.")


BUILTIN_ADAPTER_CONFIGS: dict[str, type[AdapterConfig]] = {
    "hashing": HashingConfig,
    "wordllama": WordLlamaConfig,
    "openai": OpenAIConfig,
    "ollama": OllamaConfig,
    "cohere": CohereConfig,
    "anthropic": AnthropicConfig,
    "pgvector": PgvectorConfig,
    "memory": MemoryConfig,
    "qdrant": QdrantConfig,
    "chroma": ChromaConfig,
    "lancedb": LanceDBConfig,
    "extractive": ExtractiveConfig,
    "scripted": ScriptedConfig,
}
