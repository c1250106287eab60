"""Ports: the protocols that stages need and adapters provide.

Adapter methods are not ``async def``: each returns an `AsyncPlan`, a fresh
coroutine per call, so a call can be retried, timed and replayed by policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from funcpipe.core import AsyncGen, AsyncPlan, ErrInfo, Item, Result

Embedding = Sequence[float]
Purpose = Literal["document", "query"]


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
    """One query result, best first; ``score`` is cosine similarity (higher is closer)."""

    id: str
    source_id: str
    text: str
    score: float
    meta: Mapping[str, object] = field(default_factory=dict)


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

    def query(
        self, vector: Embedding, top_k: int, filter: Mapping[str, object] | None = None
    ) -> AsyncPlan[list[QueryHit]]:
        """The ``top_k`` nearest records (cosine), optionally filtered on metadata equality."""
        ...

    def count(self) -> AsyncPlan[int]:
        """The number of records stored."""
        ...


@runtime_checkable
class GeneratePort(Protocol):
    """Answers a question from retrieved passages."""

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Generate from the rendered ``prompt``; ``question`` and ``hits`` are given too."""
        ...


@runtime_checkable
class SourcePort(Protocol):
    """Produces source items."""

    def read(self) -> AsyncGen[Item]:
        """The items, lazily."""
        ...


@runtime_checkable
class SinkPort(Protocol):
    """Writes items somewhere."""

    def write(self, items: Sequence[Item]) -> AsyncPlan[int]:
        """Write ``items``; returns the count written."""
        ...


__all__ = [
    "EmbedPort",
    "Embedding",
    "Fingerprint",
    "GeneratePort",
    "Generation",
    "Purpose",
    "QueryHit",
    "SinkPort",
    "SourcePort",
    "VectorRecord",
    "VectorStorePort",
]
