"""Ports: the protocols that stages need and adapters provide.

Adapter methods are not ``async def``: each returns an `AsyncPlan`, a fresh
coroutine per call, so a call can be retried, timed and replayed by policies.

An adapter written to the async adapter pages' smaller shape (`BatchEmbedPort`:
``embed_batch(texts)`` only, embeddings as values with a ``vector``) becomes
a full `EmbedPort` with `as_embed_port`. Every failure an adapter reports
carries one of `ADAPTER_ERROR_CODES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result

Embedding = Sequence[float]
Purpose = Literal["document", "query"]


RetrievalMode = Literal["vector", "keyword", "hybrid"]
"""How a store ranks records for a query: by vector, by full-text keywords, or both fused."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What makes embeddings comparable: the embedder's kind, model and dimension."""

    kind: str
    model: str
    dim: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}:{self.dim}"


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One row of a vector store: a chunk with its embedding.

    ``origin`` names what wrote the row (``<pipeline>/<source stage>``): source
    sync deletes only rows of its own origin, so pipelines sharing a table
    never delete each other's rows. ``""`` is rows written before origins
    existed; no sync deletes them.
    """

    id: str
    source_id: str
    text: str
    embedding: Embedding
    meta: Mapping[str, object] = field(default_factory=dict)
    origin: str = ""


@dataclass(frozen=True, slots=True)
class QueryHit:
    """One query result, best first; a higher ``score`` is a better match.

    ``score`` is what the mode ranked by: cosine similarity (``vector``), the
    BM25 score (``keyword``) or the reciprocal rank fusion score
    (``hybrid``). ``scores`` holds each ranking's own score of this record
    (``{"vector": cosine, "keyword": bm25}``, as far as each ranking found
    it), so a caller can tell a strong match from the best of weak ones.
    """

    id: str
    source_id: str
    text: str
    score: float
    meta: Mapping[str, object] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Generation:
    """A generated answer, with the provider's token usage where it reports it."""

    text: str
    usage: Mapping[str, int] = field(default_factory=dict)
    meta: Mapping[str, object] = field(default_factory=dict)


@runtime_checkable
class EmbedPort(Protocol):
    """Turns texts into vectors."""

    @property
    def fingerprint(self) -> Fingerprint:
        """Kind, model and dimension of the vectors produced."""
        ...

    @property
    def max_batch(self) -> int:
        """The provider's maximum number of texts per request."""
        ...

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts``; the list holds one result per text, in order.

        A failure of the whole request is an ``Err`` of the plan itself.
        """
        ...


ADAPTER_ERROR_CODES: frozenset[str] = frozenset(
    {
        ErrCode.AUTH,
        ErrCode.RATE_LIMIT,
        ErrCode.TRANSIENT,
        ErrCode.TIMEOUT,
        ErrCode.NETWORK,
        ErrCode.SERVICE_SPECIFIC,
        ErrCode.DB_ERROR,
        ErrCode.FATAL_DB,
    }
)
"""The codes an adapter maps every external failure to (``meta.retry_after`` in seconds with RATE_LIMIT)."""


@runtime_checkable
class BatchEmbedPort(Protocol):
    """The adapter pages' embedding capability: ``embed_batch(texts)`` and nothing else.

    The plan's ``Err`` is a request-level failure; the list holds one result
    per text, each a sequence of floats or a value with a ``vector`` of them
    (such as an ``Embedding(vector, model)`` dataclass).
    """

    def embed_batch(self, texts: list[str]) -> AsyncPlan[list[Result[Any, ErrInfo]]]:
        """Embed ``texts``, in order."""
        ...


def _floats(value: object) -> tuple[float, ...] | None:
    vector = getattr(value, "vector", value)
    if isinstance(vector, str | bytes) or not isinstance(vector, Sequence):
        return None
    try:
        return tuple(float(x) for x in vector)
    except (TypeError, ValueError):
        return None


def _seconds_hint(error: ErrInfo) -> ErrInfo:
    # Pages pass the raw Retry-After header (a string, or None); policies read seconds.
    hint = error.meta.get("retry_after")
    if isinstance(hint, str):
        try:
            return error.with_meta(retry_after=float(hint))
        except ValueError:
            pass
    if "retry_after" in error.meta and not isinstance(hint, int | float):
        return ErrInfo(error.code, error.msg, {k: v for k, v in error.meta.items() if k != "retry_after"})
    return error


class _BatchEmbedAdapter:
    """A `BatchEmbedPort` seen as an `EmbedPort` (see `as_embed_port`)."""

    def __init__(self, inner: BatchEmbedPort, kind: str, model: str, dim: int | None, max_batch: int) -> None:
        self._inner = inner
        self._kind = kind
        self._model = model
        self._dim = dim
        self._max_batch = max_batch

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self._kind, self._model, self._dim or 0)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        inner = self._inner.embed_batch(list(texts))

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            res = await inner()
            if isinstance(res, Err):
                return Err(_seconds_hint(res.error))
            if len(res.value) != len(texts):
                return Err(
                    ErrInfo(
                        ErrCode.SERVICE_SPECIFIC,
                        f"{self._kind} returned {len(res.value)} embeddings for {len(texts)} texts",
                        {"expected": len(texts), "got": len(res.value)},
                    )
                )
            out: list[Result[Embedding, ErrInfo]] = []
            for r in res.value:
                if isinstance(r, Err):
                    out.append(Err(_seconds_hint(r.error)))
                    continue
                vector = _floats(r.value)
                if vector is None:
                    out.append(Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, f"not an embedding: {type(r.value).__name__}")))
                    continue
                if self._dim is None:
                    self._dim = len(vector)  # the first vector fixes the fingerprint's dimension
                if len(vector) != self._dim:
                    out.append(
                        Err(
                            ErrInfo(
                                ErrCode.SERVICE_SPECIFIC,
                                f"{self._kind} returned a vector of dimension {len(vector)}, expected {self._dim}",
                                {"expected": self._dim, "got": len(vector)},
                            )
                        )
                    )
                    continue
                out.append(Ok(vector))
            return Ok(out)

        return run


def as_embed_port(
    adapter: BatchEmbedPort, *, kind: str, model: str, dim: int | None = None, max_batch: int = 2048
) -> EmbedPort:
    """Present an adapter of the pages' shape as the `EmbedPort` stages use.

    Args:
        adapter: anything with ``embed_batch(texts) -> AsyncPlan[list[Result]]``.
        kind: the kind named in the fingerprint (a vector table records it).
        model: the model named in the fingerprint.
        dim: the vectors' dimension; None learns it from the first vector.
        max_batch: the most texts the provider takes per request.

    Returns:
        An `EmbedPort` whose ``purpose`` is ignored and whose vectors are tuples
        of floats. A wrong count or dimension is ``SERVICE_SPECIFIC``; a
        ``retry_after`` given as header text becomes seconds.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return _BatchEmbedAdapter(adapter, kind, model, dim, max_batch)


@runtime_checkable
class VectorStorePort(Protocol):
    """Stores chunks with vectors and answers nearest-neighbour queries."""

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Create what is missing (extension, table, index), idempotently.

        Fails with ``SERVICE_SPECIFIC`` naming both fingerprints when the table
        was written by a different embedder.
        """
        ...

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id, atomically; returns the count written."""
        ...

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the chunks of ``source_id`` whose id is not in ``keep_ids``; returns the count."""
        ...

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete in one statement the rows of ``origin`` of ``source_ids`` whose id is not in ``keep_ids``.

        With ``keep_ids`` empty, every row of those sources goes (source sync);
        with the ids just written, only their stale rows go. Returns the count.
        """
        ...

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""
        ...

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored (their vectors came from the table's own embedder)."""
        ...

    def query(
        self,
        vector: Embedding,
        top_k: int,
        filter: Mapping[str, object] | None = None,
        *,
        text: str | None = None,
        mode: RetrievalMode = "vector",
    ) -> AsyncPlan[list[QueryHit]]:
        """The ``top_k`` best records, best first, optionally filtered on metadata equality.

        ``mode`` chooses the ranking: ``vector`` (cosine to ``vector``),
        ``keyword`` (full-text match of ``text``) or ``hybrid`` (both, fused by
        reciprocal rank fusion). A store that cannot rank by a mode fails with
        ``SERVICE_SPECIFIC`` naming the store and the mode.
        """
        ...

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the table exists, and the fingerprint of the embedder that wrote it (None if unrecorded)."""
        ...

    def count(self) -> AsyncPlan[int]:
        """The number of records stored."""
        ...


@runtime_checkable
class BulkLoadStore(Protocol):
    """A vector store that leaves work of a bulk load for its end: building the vector index.

    Its ``ensure`` may create an empty table without the index (inserting into
    an index is several times slower than building it once over the rows);
    the runner then calls `finish_load` once the stream has drained, never
    after a run that stopped early. A store that is ensured when it already
    has rows builds the index there, so a load cut short is never left
    without one past the next run.
    """

    def finish_load(self) -> AsyncPlan[bool]:
        """Build what the load deferred, idempotently; True if something was built now."""
        ...


@runtime_checkable
class GeneratePort(Protocol):
    """Answers a question from retrieved passages."""

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Generate from the rendered ``prompt``; ``question`` and ``hits`` are given too."""
        ...


__all__ = [
    "ADAPTER_ERROR_CODES",
    "BatchEmbedPort",
    "BulkLoadStore",
    "EmbedPort",
    "Embedding",
    "Fingerprint",
    "GeneratePort",
    "Generation",
    "Purpose",
    "QueryHit",
    "RetrievalMode",
    "VectorRecord",
    "VectorStorePort",
    "as_embed_port",
]
