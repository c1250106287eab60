"""Cohere's v2 embed API: ``POST /v2/embed``.

Cohere embeds documents and queries differently, so ``purpose`` becomes
``input_type`` (``search_document`` or ``search_query``).
"""

from __future__ import annotations

from collections.abc import Mapping

from funcpipe.adapters.config import CohereConfig
from funcpipe.adapters.http import HTTPEmbedder, check_vectors, malformed, unknown_dimension
from funcpipe.adapters.resources import Resources
from funcpipe.core import Err, ErrCode, ErrInfo, Result, report_usage
from funcpipe.ports import Purpose

KNOWN_DIMENSIONS: Mapping[str, int] = {
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}
"""Default dimension of Cohere's embedding models; any other model needs ``dimensions:``."""

INPUT_TYPES: Mapping[str, str] = {"document": "search_document", "query": "search_query"}
"""``purpose`` to Cohere's ``input_type``."""

PROVIDER = "cohere"

# 498 is Cohere's "invalid token"; 499 a request cancelled on their side.
STATUS_CODES: Mapping[int, str] = {498: ErrCode.AUTH, 499: ErrCode.TRANSIENT}


def billed_tokens(payload: object) -> int | None:
    """The input tokens a v2 embed response says it billed (``meta.billed_units.input_tokens``), if it says."""
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
    tokens = billed.get("input_tokens") if isinstance(billed, Mapping) else None
    # Cohere writes the count as a float (e.g. 12.0).
    if isinstance(tokens, int | float) and not isinstance(tokens, bool) and 0 <= tokens < 2**53:
        return int(tokens)
    return None


def parse_embed(payload: object, *, count: int, dim: int) -> Result[list[list[float]], ErrInfo]:
    """The float vectors of a v2 embed response, checked."""
    by_type = payload.get("embeddings") if isinstance(payload, Mapping) else None
    vectors = by_type.get("float") if isinstance(by_type, Mapping) else None
    if vectors is None:
        return Err(malformed(PROVIDER, "no 'embeddings.float' in the embed response"))
    return check_vectors(vectors, count=count, dim=dim, provider=PROVIDER)


class CohereAdapter(HTTPEmbedder):
    """Embeddings over Cohere's v2 API (`EmbedPort`)."""

    provider = PROVIDER
    status_codes = STATUS_CODES

    def __init__(self, config: CohereConfig, resources: Resources, dim: int) -> None:
        super().__init__(config, resources, model=config.model, dim=dim, max_batch=config.max_batch)
        self.config = config

    async def _embed(self, texts: list[str], purpose: Purpose, dim: int) -> Result[list[list[float]], ErrInfo]:
        body: dict[str, object] = {
            "model": self.config.model,
            "texts": texts,
            "input_type": INPUT_TYPES[purpose],
            "embedding_types": list(self.config.embedding_types),
            "truncate": self.config.truncate,
        }
        if self.config.dimensions is not None:
            body["output_dimension"] = self.config.dimensions
        answer = await self.post("v2/embed", body)
        if isinstance(answer, Err):
            return answer
        tokens = billed_tokens(answer.value)
        if tokens is not None:
            report_usage(input_tokens=tokens)
        return parse_embed(answer.value, count=len(texts), dim=dim)


def create(config: CohereConfig, resources: Resources) -> CohereAdapter:
    """The ``cohere`` adapter factory.

    Raises:
        funcpipe.errors.SpecError: the model's dimension is neither configured nor known.
    """
    dim = config.dimensions or KNOWN_DIMENSIONS.get(config.model)
    if dim is None:
        raise unknown_dimension(PROVIDER, config.model)
    return CohereAdapter(config, resources, dim)
