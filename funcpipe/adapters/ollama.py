"""Ollama's native API: ``/api/embed`` and ``/api/chat``.

Ollama needs no key; ``api_key_env``, when set, is sent as a bearer token for
servers behind an authenticating proxy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from funcpipe.adapters.config import OllamaConfig
from funcpipe.adapters.http import HTTPEmbedder, check_vectors, malformed, report_generation
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrInfo, Ok, Result, report_usage
from funcpipe.ports import Generation, Purpose, QueryHit

KNOWN_DIMENSIONS: Mapping[str, int] = {
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "snowflake-arctic-embed": 1024,
    "bge-m3": 1024,
}
"""Native dimension of common Ollama embedding models (a ``:latest`` tag is ignored)."""

PROVIDER = "ollama"


def known_dimension(model: str) -> int | None:
    """The native dimension of ``model`` if it is a known model at its default tag."""
    name, _, tag = model.partition(":")
    return KNOWN_DIMENSIONS.get(name) if tag in ("", "latest") else None


def parse_embed(payload: object, *, count: int, dim: int) -> Result[list[list[float]], ErrInfo]:
    """The vectors of an ``/api/embed`` response, checked."""
    vectors = payload.get("embeddings") if isinstance(payload, Mapping) else None
    if vectors is None:
        return Err(malformed(PROVIDER, "no 'embeddings' in the /api/embed response"))
    return check_vectors(vectors, count=count, dim=dim, provider=PROVIDER)


def parse_chat(payload: object) -> Result[Generation, ErrInfo]:
    """The `Generation` of a non-streaming ``/api/chat`` response."""
    message = payload.get("message") if isinstance(payload, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        return Err(malformed(PROVIDER, "no message.content in the /api/chat response"))
    assert isinstance(payload, Mapping)
    tokens: dict[str, int] = {}
    for ours, theirs in (("input_tokens", "prompt_eval_count"), ("output_tokens", "eval_count")):
        value = payload.get(theirs)
        if type(value) is int:
            tokens[ours] = value
    meta = {k: v for k in ("model", "done_reason") if isinstance(v := payload.get(k), str)}
    return Ok(Generation(text=content, usage=tokens, meta=meta))


class OllamaAdapter(HTTPEmbedder):
    """Embeddings and chat over Ollama's native API (`EmbedPort` and `GeneratePort`).

    The fingerprint's dimension is ``dimensions`` when set, else the native
    size of a model in `KNOWN_DIMENSIONS`; for any other model, reading
    ``fingerprint`` raises a `funcpipe.errors.SpecError` asking for
    ``dimensions:``. ``dimensions`` is also sent, so servers that can shorten
    vectors do.
    """

    provider = PROVIDER

    def __init__(self, config: OllamaConfig, resources: Resources) -> None:
        dim = config.dimensions or known_dimension(config.model)
        super().__init__(config, resources, model=config.model, dim=dim, max_batch=config.max_batch)
        self.config = config

    async def _embed(self, texts: list[str], purpose: Purpose, dim: int) -> Result[list[list[float]], ErrInfo]:
        # The native API has no purpose: it is ignored.
        body: dict[str, object] = {"model": self.config.model, "input": texts, "truncate": self.config.truncate}
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive
        if self.config.dimensions is not None:
            body["dimensions"] = self.config.dimensions
        answer = await self.post("api/embed", body)
        if isinstance(answer, Err):
            return answer
        tokens = answer.value.get("prompt_eval_count") if isinstance(answer.value, Mapping) else None
        if type(tokens) is int and tokens >= 0:
            report_usage(input_tokens=tokens)
        return parse_embed(answer.value, count=len(texts), dim=dim)

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Answer the rendered ``prompt`` as a single user message, without streaming."""
        body: dict[str, object] = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": False,
            "options": {"temperature": self.config.temperature, "num_predict": self.config.max_tokens},
        }
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive

        async def run() -> Result[Generation, ErrInfo]:
            answer = await self.post("api/chat", body)
            if isinstance(answer, Err):
                return answer
            return report_generation(parse_chat(answer.value))

        return run


def create(config: OllamaConfig, resources: Resources) -> OllamaAdapter:
    """The ``ollama`` adapter factory."""
    return OllamaAdapter(config, resources)
