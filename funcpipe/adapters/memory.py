"""The ``memory`` vector store: the `VectorStorePort` contract of ``pgvector``, in process.

It answers exactly what an exact-scan ``pgvector`` table answers for the
same calls: vectors are kept as float32 as pgvector keeps them, metadata as
its JSON round trip, queries rank by cosine distance with ties broken by id,
filters follow jsonb containment, and writes before `ensure` or with the
wrong dimension fail with ``DB_ERROR``. A record holding what PostgreSQL
refuses (NUL, a lone surrogate, NaN in meta) fails with the same
``BAD_INPUT`` as there (`funcpipe.adapters._storable`). The data lives as
long as the store object.

Keyword search ranks by BM25 over `keyword_terms` (English stop words out,
light stemming, as pgvector's default ``english`` configuration), with the
statistics of the whole store; hybrid search fuses the vector and keyword
rankings by reciprocal rank fusion (`funcpipe.adapters._retrieval`).
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from funcpipe.adapters._retrieval import RRF_K, bm25, fusion_depth, keyword_terms, rrf
from funcpipe.adapters._storable import refusal
from funcpipe.adapters.config import MemoryConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Row:
    source_id: str
    origin: str
    text: str
    meta: dict[str, object]
    embedding: array[float]
    norm: float
    terms: Counter[str] = field(compare=False, default_factory=Counter)


def contains(container: object, contained: object) -> bool:
    """jsonb containment (``container @> contained``) for JSON-like Python values.

    Objects contain objects whose every key they have with a contained
    value; arrays contain arrays whose every element some element contains;
    scalars are equal. ``true`` is not ``1``, as in JSON.
    """
    if isinstance(contained, Mapping):
        return isinstance(container, Mapping) and all(
            k in container and contains(container[k], v) for k, v in contained.items()
        )
    if isinstance(contained, list):
        return isinstance(container, list) and all(any(contains(c, v) for c in container) for v in contained)
    if isinstance(container, Mapping | list):
        return False
    if isinstance(contained, bool) or isinstance(container, bool):
        return type(contained) is type(container) and contained == container
    return container == contained


def _json_roundtrip(value: Mapping[str, object]) -> dict[str, object]:
    loaded = json.loads(json.dumps(dict(value), default=str, ensure_ascii=False, allow_nan=False))
    return dict(loaded)


class MemoryStore:
    """A `VectorStorePort` held in a dict.

    Args:
        name: shown in messages, like a table name.
        rrf_k: the rank constant of hybrid search's reciprocal rank fusion.
    """

    def __init__(self, name: str = "memory", *, rrf_k: int = RRF_K) -> None:
        self._name = name
        self._rrf_k = rrf_k
        self._fingerprint: Fingerprint | None = None
        self._rows: dict[str, _Row] = {}

    def _plan(self, body: Callable[[Fingerprint], Result[T, ErrInfo]]) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            if self._fingerprint is None:
                return Err(
                    ErrInfo(
                        ErrCode.DB_ERROR,
                        f"store {self._name} does not exist yet: run the ingest pipeline first "
                        "(its vector.upsert creates it)",
                    )
                )
            return body(self._fingerprint)

        return run

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Record ``fingerprint`` on first use; a different one later is ``SERVICE_SPECIFIC``."""

        async def run() -> Result[None, ErrInfo]:
            if self._fingerprint is None:
                self._fingerprint = fingerprint
            elif self._fingerprint != fingerprint:
                return Err(
                    ErrInfo(
                        ErrCode.SERVICE_SPECIFIC,
                        f"store {self._name} holds vectors from embedder {self._fingerprint}, but the configured "
                        f"embedder is {fingerprint}; vectors of different embedders cannot be compared. "
                        "Fix: use a new store",
                        {"stored": str(self._fingerprint), "configured": str(fingerprint), "table": self._name},
                    )
                )
            return Ok(None)

        return run

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the store was prepared (`ensure`), and the fingerprint it records."""

        async def run() -> Result[tuple[bool, Fingerprint | None], ErrInfo]:
            return Ok((self._fingerprint is not None, self._fingerprint))

        return run

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id, all or none; returns the rows inserted or changed."""
        latest = {r.id: r for r in records}
        if not latest:
            return async_pure(0)

        def body(fingerprint: Fingerprint) -> Result[int, ErrInfo]:
            staged: dict[str, _Row] = {}
            for r in latest.values():
                row = _row(r, fingerprint.dim)
                if isinstance(row, Err):
                    return row
                staged[r.id] = row.value
            changed = [rid for rid, row in staged.items() if self._rows.get(rid) != row]
            for rid in changed:
                self._rows[rid] = staged[rid]
            return Ok(len(changed))

        return self._plan(body)

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the rows of ``source_id`` whose id is not in ``keep_ids``; returns how many."""
        keep = set(keep_ids)

        def body(_fp: Fingerprint) -> Result[int, ErrInfo]:
            stale = [rid for rid, row in self._rows.items() if row.source_id == source_id and rid not in keep]
            for rid in stale:
                del self._rows[rid]
            return Ok(len(stale))

        return self._plan(body)

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete the rows of ``origin`` whose source is in ``source_ids`` and id not in ``keep_ids``."""
        sources, keep = set(source_ids), set(keep_ids)

        def body(_fp: Fingerprint) -> Result[int, ErrInfo]:
            gone = [
                rid
                for rid, row in self._rows.items()
                if row.origin == origin and row.source_id in sources and rid not in keep
            ]
            for rid in gone:
                del self._rows[rid]
            return Ok(len(gone))

        return self._plan(body)

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""
        return self._plan(
            lambda _fp: Ok(sorted({row.source_id for row in self._rows.values() if row.origin == origin}))
        )

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored."""
        return self._plan(lambda _fp: Ok({i for i in ids if i in self._rows}))

    def query(
        self,
        vector: Embedding,
        top_k: int,
        filter: Mapping[str, object] | None = None,
        *,
        text: str | None = None,
        mode: RetrievalMode = "vector",
    ) -> AsyncPlan[list[QueryHit]]:
        """The ``top_k`` best rows for ``mode``, best first, ties by id.

        ``vector`` ranks by exact cosine distance to ``vector``; ``keyword``
        by the BM25 score of ``text`` (rows sharing no term are left out);
        ``hybrid`` fuses both rankings' first `fusion_depth` rows by
        reciprocal rank fusion.
        """
        if mode != "vector" and text is None:
            return async_fail(ErrInfo(ErrCode.SERVICE_SPECIFIC, f"a {mode} query needs the question's text"))
        q = array("f", vector)
        q_norm = math.sqrt(math.fsum(x * x for x in q))
        wanted = _json_roundtrip(filter) if filter else None
        terms = keyword_terms(text or "")
        depth = top_k if mode != "hybrid" else max(top_k, fusion_depth(top_k))

        def by_vector(fingerprint: Fingerprint) -> Result[list[tuple[str, float]], ErrInfo]:
            if len(q) != fingerprint.dim:
                return Err(ErrInfo(ErrCode.DB_ERROR, f"different vector dimensions {fingerprint.dim} and {len(q)}"))
            ranked: list[tuple[bool, float, str]] = []
            for rid, row in self._rows.items():
                if wanted is not None and not contains(row.meta, wanted):
                    continue
                distance = _cosine_distance(q, q_norm, row)
                undefined = math.isnan(distance)
                ranked.append((undefined, 0.0 if undefined else distance, rid))
            ranked.sort()
            # A zero vector has no direction: call it unrelated, as pgvector's NaN is.
            return Ok([(rid, 0.0 if undefined else 1.0 - d) for undefined, d, rid in ranked[:depth]])

        def by_keyword() -> list[tuple[str, float]]:
            docs = {rid: row.terms for rid, row in self._rows.items()}
            candidates = [rid for rid, row in self._rows.items() if wanted is None or contains(row.meta, wanted)]
            scored = bm25(terms, docs, candidates=candidates)
            return sorted(scored.items(), key=lambda pair: (-pair[1], pair[0]))[:depth]

        def hit(rid: str, score: float, scores: dict[str, float]) -> QueryHit:
            row = self._rows[rid]
            return QueryHit(rid, row.source_id, row.text, score, dict(row.meta), scores)

        def body(fingerprint: Fingerprint) -> Result[list[QueryHit], ErrInfo]:
            if mode == "keyword":
                return Ok([hit(rid, s, {"keyword": s}) for rid, s in by_keyword()])
            vectors = by_vector(fingerprint)
            if isinstance(vectors, Err):
                return vectors
            if mode == "vector":
                return Ok([hit(rid, s, {"vector": s}) for rid, s in vectors.value])
            keywords = by_keyword()
            own = {"vector": dict(vectors.value), "keyword": dict(keywords)}
            fused = rrf([[rid for rid, _ in vectors.value], [rid for rid, _ in keywords]], self._rrf_k)
            return Ok(
                [
                    hit(rid, s, {name: scores[rid] for name, scores in own.items() if rid in scores})
                    for rid, s in fused[:top_k]
                ]
            )

        return self._plan(body)

    def count(self) -> AsyncPlan[int]:
        """The number of rows."""
        return self._plan(lambda _fp: Ok(len(self._rows)))


def _row(record: VectorRecord, dim: int) -> Ok[_Row] | Err[ErrInfo]:
    """A record as pgvector would store it, or the error PostgreSQL would give."""
    values = array("f", record.embedding)
    if len(values) != dim:
        return Err(ErrInfo(ErrCode.DB_ERROR, f"record {record.id}: expected {dim} dimensions, not {len(values)}"))
    if not all(math.isfinite(x) for x in values):
        return Err(ErrInfo(ErrCode.DB_ERROR, f"record {record.id}: NaN or infinite values are not allowed in vector"))
    refused = refusal(record)
    if refused is not None:
        return Err(refused)
    try:
        meta = _json_roundtrip(record.meta)
    except ValueError as exc:
        return Err(ErrInfo(ErrCode.BAD_INPUT, f"record {record.id}: meta is not valid JSON: {exc}"))
    norm = math.sqrt(math.fsum(x * x for x in values))
    terms = Counter(keyword_terms(record.text))
    return Ok(_Row(record.source_id, record.origin, record.text, meta, values, norm, terms))


def _cosine_distance(q: array[float], q_norm: float, row: _Row) -> float:
    if q_norm == 0.0 or row.norm == 0.0:
        return math.nan
    dot = math.fsum(a * b for a, b in zip(q, row.embedding, strict=True))
    return 1.0 - dot / (q_norm * row.norm)


def create(config: MemoryConfig, resources: Resources) -> MemoryStore:
    """The adapter factory: an empty `MemoryStore`."""
    return MemoryStore(rrf_k=config.rrf_k)
