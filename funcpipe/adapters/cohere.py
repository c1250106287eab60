"""Cohere's v2 embed API: ``POST /v2/embed``.

Cohere embeds documents and queries differently, so ``purpose`` becomes
``input_type`` (``search_document`` or ``search_query``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from funcpipe.adapters._http import HTTPAdapter, check_vectors, embed_in_batches, malformed, unknown_dimension
from funcpipe.adapters.config import CohereConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Result
from funcpipe.ports import Embedding, Fingerprint, Purpose

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


def parse_embed(payload: object, *, count: int, dim: int) -> Result[list[list[float]], ErrInfo]:
    """The float vectors of a v2 embed response, checked."""
    by_type = payload.get("embeddings") if isinstance(payload, Mapping) else None
    vectors = by_type.get("float") if isinstance(by_type, Mapping) else None
    if vectors is None:
        return Err(malformed(PROVIDER, "no 'embeddings.float' in the embed response"))
    return check_vectors(vectors, count=count, dim=dim, provider=PROVIDER)


class CohereAdapter(HTTPAdapter):
    """Embeddings over Cohere's v2 API (`EmbedPort`)."""

    provider = PROVIDER
    status_codes = STATUS_CODES

    def __init__(self, config: CohereConfig, resources: Resources, dim: int) -> None:
        super().__init__(config, resources)
        self.config = config
        self._dim = dim

    @property
    def fingerprint(self) -> Fingerprint:
        """``cohere``, the model and its dimension."""
        return Fingerprint(PROVIDER, self.config.model, self._dim)

    @property
    def max_batch(self) -> int:
        """Texts per request at most (Cohere allows 96)."""
        return self.config.max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts`` as documents or as search queries."""
        batch = list(texts)
        input_type = INPUT_TYPES[purpose]

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            return await embed_in_batches(batch, self.max_batch, lambda sub: self._embed(sub, input_type))

        return run

    async def _embed(self, texts: list[str], input_type: str) -> Result[list[list[float]], ErrInfo]:
        body: dict[str, object] = {
            "model": self.config.model,
            "texts": texts,
            "input_type": input_type,
            "embedding_types": list(self.config.embedding_types),
            "truncate": self.config.truncate,
        }
        if self.config.dimensions is not None:
            body["output_dimension"] = self.config.dimensions
        answer = await self.post("v2/embed", body)
        if isinstance(answer, Err):
            return answer
        return parse_embed(answer.value, count=len(texts), dim=self._dim)


def create(config: CohereConfig, resources: Resources) -> CohereAdapter:
    """The ``cohere`` adapter factory.

    Raises:
        funcpipe.errors.SpecError: the model's dimension is neither configured nor known.
    """
    dim = config.dimensions or KNOWN_DIMENSIONS.get(config.model)
    if dim is None:
        raise unknown_dimension(PROVIDER, config.model)
    return CohereAdapter(config, resources, dim)
