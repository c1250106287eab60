"""The ``qdrant`` vector store: Qdrant's local mode under ``.funcpipe/qdrant``, or a Qdrant server.

Install with ``pip install 'funcpipe-runner[qdrant]'``. One collection holds
the chunks, with cosine distance; its metadata records the embedder's
fingerprint (Qdrant 1.16 or later on a server). Qdrant ids are UUIDs or
integers, so a chunk's point id is the UUIDv5 of its id, and the chunk id
itself is kept in the payload with the source id, origin, text, meta, the
filter pairs and the content hash (see `funcpipe.adapters._store_common`).

A server is reached with Qdrant's async client; local mode, which keeps the
collection in memory and on disk and blocks while it works, runs in a
worker thread, one call at a time. Local mode allows one process per
directory: a second process gets a clear error saying to run a server.

Ranking: vector only. Keyword and hybrid need sparse vectors, which Qdrant
computes with a model it downloads (or on a server with inference), so they
fail with ``SERVICE_SPECIFIC``.

Failures, as `ErrInfo` codes:

    connection refused, reset, lost          TRANSIENT
    timeouts                                 TIMEOUT
    HTTP 401, 403                            AUTH
    HTTP 429                                 RATE_LIMIT
    HTTP 408, 409, 5xx                       TRANSIENT
    other HTTP 4xx, a request Qdrant refuses SERVICE_SPECIFIC
    local directory in use by a process      DB_ERROR
    collection missing                       DB_ERROR (run the ingest pipeline first)
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from funcpipe.adapters import _store_common as common
from funcpipe.adapters._store_common import ClientCalls
from funcpipe.adapters.config import QdrantConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://funcpipe.dev/qdrant/chunk-id")
_PAGE = 1024
_FIELDS = ("id", "source_id", "origin", "text", "meta", "hash")


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: the UUIDv5 of its id, the same on every run and machine."""
    return str(uuid.uuid5(_NAMESPACE, chunk_id))


class _Local:
    """One local-mode client per directory in this process: Qdrant locks the directory per client."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    clients: ClassVar[dict[Path, tuple[Any, threading.Lock, int]]] = {}

    @classmethod
    def acquire(cls, path: Path, qdrant: Any) -> tuple[Any, threading.Lock]:
        with cls.lock:
            client, call_lock, users = cls.clients.get(path, (None, threading.Lock(), 0))
            if client is None:
                path.mkdir(parents=True, exist_ok=True)
                client = qdrant.QdrantClient(path=str(path))
            cls.clients[path] = (client, call_lock, users + 1)
            return client, call_lock

    @classmethod
    def release(cls, path: Path) -> None:
        with cls.lock:
            client, call_lock, users = cls.clients[path]
            if users > 1:
                cls.clients[path] = (client, call_lock, users - 1)
                return
            del cls.clients[path]
        client.close()


class QdrantStore:
    """A `VectorStorePort` over one Qdrant collection.

    Args:
        config: the collection, and the server if any.
        resources: the run's resources: its state directory, secrets, and closing.
    """

    def __init__(self, config: QdrantConfig, resources: Resources) -> None:
        self._config = config
        self._resources = resources
        self._qdrant = common.import_client("qdrant_client", "qdrant", "qdrant")
        self._models: Any = self._qdrant.models
        self._client: ClientCalls | None = None
        self._opening = asyncio.Lock()
        self._dim: int | None = None
        self._secrets: list[str] = []
        self._name = config.collection
        where = common.shown(config.url) if config.url else str(resources.state_dir / "qdrant")
        self._where = f"qdrant collection {self._name} at {where}"

    # -- plumbing --

    async def _open(self) -> ClientCalls:
        async with self._opening:
            if self._client is not None:
                return self._client
            if self._config.url is not None:
                key = self._config.api_key_env
                client = self._qdrant.AsyncQdrantClient(
                    url=self._config.url,
                    api_key=common.read_key(self._resources, key, self._secrets),
                    timeout=max(1, int(self._config.request_timeout)),
                    # The check is a request of its own, and its failure a warning on stderr.
                    check_compatibility=False,
                )
                self._resources.close_later(client.close)
                self._client = ClientCalls(client, None)
            else:
                path = (self._resources.state_dir / "qdrant").resolve()
                local, call_lock = await asyncio.to_thread(_Local.acquire, path, self._qdrant)

                async def release() -> None:
                    await asyncio.to_thread(_Local.release, path)

                self._resources.close_later(release)
                self._client = ClientCalls(local, call_lock)
            return self._client

    def _plan(self, doing: str, body: Callable[[ClientCalls], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            return await body(await self._open())

        timeout = self._config.request_timeout if self._config.url is not None else None
        return common.guarded(self._describe, doing, run, timeout)

    def _describe(self, exc: BaseException, doing: str) -> ErrInfo:
        return common.redacted(error_info(exc, doing=f"{doing} {self._where}", collection=self._name), self._secrets)

    async def _stored(self, client: ClientCalls) -> tuple[bool, Fingerprint | None]:
        if not await client.call("collection_exists", collection_name=self._name):
            return False, None
        info = await client.call("get_collection", collection_name=self._name)
        metadata = getattr(info.config, "metadata", None) or {}
        return True, common.parse_fingerprint(metadata.get(common.FINGERPRINT_KEY))

    async def _dimension(self, client: ClientCalls) -> int | None:
        """The dimension the collection records (cached), or None if it does not exist."""
        if self._dim is None:
            exists, stored = await self._stored(client)
            if exists:
                info = await client.call("get_collection", collection_name=self._name)
                self._dim = stored.dim if stored else int(info.config.params.vectors.size)
        return self._dim

    def _ready(self, doing: str, body: Callable[[ClientCalls, int], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        async def run(client: ClientCalls) -> Result[T, ErrInfo]:
            dim = await self._dimension(client)
            if dim is None:
                return Err(common.not_created("qdrant collection", self._name))
            return await body(client, dim)

        return self._plan(doing, run)

    def _match(self, key: str, value: object) -> Any:
        m = self._models
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def _match_any(self, key: str, values: Sequence[str]) -> Any:
        m = self._models
        return m.FieldCondition(key=key, match=m.MatchAny(any=list(values)))

    def _without(self, keep_ids: Sequence[str]) -> list[Any]:
        return [self._models.HasIdCondition(has_id=[point_id(i) for i in keep_ids])] if keep_ids else []

    # -- ensure --

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Create the collection (cosine, the fingerprint in its metadata) if missing; check the fingerprint."""

        async def body(client: ClientCalls) -> Result[None, ErrInfo]:
            exists, stored = await self._stored(client)
            if exists:
                if stored != fingerprint:
                    return Err(common.mismatch("qdrant collection", self._name, "collection", stored, fingerprint))
                self._dim = fingerprint.dim
                return Ok(None)
            m = self._models
            await client.call(
                "create_collection",
                collection_name=self._name,
                vectors_config=m.VectorParams(size=fingerprint.dim, distance=m.Distance.COSINE),
                metadata={common.FINGERPRINT_KEY: common.fingerprint_json(fingerprint)},
            )
            if self._config.url is not None:
                # Local mode has no payload indexes (it scans); a server uses them for filters and deletes.
                for field in ("source_id", "origin", "pairs"):
                    await client.call(
                        "create_payload_index",
                        collection_name=self._name,
                        field_name=field,
                        field_schema=m.PayloadSchemaType.KEYWORD,
                    )
            self._dim = fingerprint.dim
            return Ok(None)

        return self._plan("create", body)

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the collection exists, and the fingerprint its metadata records; creates nothing."""

        async def body(client: ClientCalls) -> Result[tuple[bool, Fingerprint | None], ErrInfo]:
            return Ok(await self._stored(client))

        return self._plan("read the embedder fingerprint of", body)

    # -- writes --

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id; returns the rows inserted or changed (identical ones are skipped)."""
        if not records:
            return async_pure(0)

        async def body(client: ClientCalls, dim: int) -> Result[int, ErrInfo]:
            latest = common.checked(records, dim)
            if isinstance(latest, Err):
                return latest
            points: dict[str, tuple[VectorRecord, str, str]] = {}
            for r in latest.value.values():
                meta = common.meta_text(r.meta)
                points[point_id(r.id)] = (r, meta, common.content_hash(r, meta, r.embedding))
            stored = await client.call(
                "retrieve", collection_name=self._name, ids=list(points), with_payload=["hash"], with_vectors=False
            )
            same = {str(p.id) for p in stored if (p.payload or {}).get("hash") == points[str(p.id)][2]}
            m = self._models
            changed = [
                m.PointStruct(
                    id=pid,
                    vector=[float(x) for x in r.embedding],
                    payload={
                        "id": r.id,
                        "source_id": r.source_id,
                        "origin": r.origin,
                        "text": r.text,
                        "meta": meta,
                        "pairs": common.pairs(r.meta),
                        "hash": digest,
                    },
                )
                for pid, (r, meta, digest) in points.items()
                if pid not in same
            ]
            if changed:
                await client.call("upsert", collection_name=self._name, points=changed, wait=True)
            return Ok(len(changed))

        return self._ready("upsert into", body)

    async def _delete(self, client: ClientCalls, flt: Any) -> int:
        found = await client.call("count", collection_name=self._name, count_filter=flt, exact=True)
        if found.count:
            await client.call(
                "delete", collection_name=self._name, points_selector=self._models.FilterSelector(filter=flt), wait=True
            )
        return int(found.count)

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the rows of ``source_id`` whose id is not in ``keep_ids``; returns how many."""

        async def body(client: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            flt = self._models.Filter(must=[self._match("source_id", source_id)], must_not=self._without(keep_ids))
            return Ok(await self._delete(client, flt))

        return self._ready("delete stale rows from", body)

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete the rows of ``origin`` of ``source_ids`` whose id is not in ``keep_ids``; returns how many."""
        if not source_ids:
            return async_pure(0)

        async def body(client: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            flt = self._models.Filter(
                must=[self._match("origin", origin), self._match_any("source_id", list(dict.fromkeys(source_ids)))],
                must_not=self._without(keep_ids),
            )
            return Ok(await self._delete(client, flt))

        return self._ready("delete rows from", body)

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""

        async def body(client: ClientCalls, _dim: int) -> Result[list[str], ErrInfo]:
            flt = self._models.Filter(must=[self._match("origin", origin)])
            seen: set[str] = set()
            offset = None
            while True:
                points, offset = await client.call(
                    "scroll",
                    collection_name=self._name,
                    scroll_filter=flt,
                    limit=_PAGE,
                    offset=offset,
                    with_payload=["source_id"],
                )
                seen.update(str((p.payload or {}).get("source_id", "")) for p in points)
                if offset is None:
                    return Ok(sorted(seen))

        return self._ready("list sources of", body)

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored, in one request."""
        wanted = {point_id(i): i for i in ids}
        if not wanted:
            return async_pure(set())

        async def body(client: ClientCalls, _dim: int) -> Result[set[str], ErrInfo]:
            found = await client.call(
                "retrieve", collection_name=self._name, ids=list(wanted), with_payload=False, with_vectors=False
            )
            return Ok({wanted[str(p.id)] for p in found})

        return self._ready("look up ids in", body)

    # -- reads --

    def query(
        self,
        vector: Embedding,
        top_k: int,
        filter: Mapping[str, object] | None = None,
        *,
        text: str | None = None,
        mode: RetrievalMode = "vector",
    ) -> AsyncPlan[list[QueryHit]]:
        """The ``top_k`` points nearest ``vector`` by cosine similarity, best first, ties by id.

        ``filter`` keeps points whose meta holds each of its scalar entries.
        """
        if mode != "vector":
            return async_fail(
                common.unsupported_mode(
                    "qdrant", mode, "it ranks text with sparse vectors from a model it would download"
                )
            )
        wanted = common.filter_pairs("qdrant", filter)
        if isinstance(wanted, Err):
            return async_fail(wanted.error)
        values = [float(x) for x in vector]

        async def body(client: ClientCalls, dim: int) -> Result[list[QueryHit], ErrInfo]:
            wrong = common.check_query(values, dim)
            if wrong is not None:
                return Err(wrong)
            flt = self._models.Filter(must=[self._match("pairs", p) for p in wanted.value]) if wanted.value else None
            found = await client.call(
                "query_points",
                collection_name=self._name,
                query=values,
                query_filter=flt,
                limit=top_k,
                with_payload=list(_FIELDS),
            )
            hits = [_hit(p.payload or {}, float(p.score)) for p in found.points]
            return Ok(common.ranked(hits, top_k))

        return self._ready("query", body)

    def count(self) -> AsyncPlan[int]:
        """The number of points in the collection."""

        async def body(client: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            found = await client.call("count", collection_name=self._name, exact=True)
            return Ok(int(found.count))

        return self._ready("count", body)


def _hit(payload: Mapping[str, Any], score: float) -> QueryHit:
    return QueryHit(
        str(payload.get("id", "")),
        str(payload.get("source_id", "")),
        str(payload.get("text", "")),
        score,
        common.load_meta(payload.get("meta")),
    )


def error_info(exc: BaseException, *, doing: str = "", collection: str = "") -> ErrInfo:
    """The `ErrInfo` for what the Qdrant client raised (codes in the module docstring)."""
    prefix = f"{doing}: " if doing else ""
    name = type(exc).__name__
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int):
        # ResourceExhaustedResponse: HTTP 429, with the server's Retry-After.
        return ErrInfo(
            ErrCode.RATE_LIMIT,
            f"{prefix}Qdrant is rate limiting: {exc}",
            {"retry_after": float(retry_after), "exception": name},
        )
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        detail = bytes(getattr(exc, "content", b"") or b"").decode("utf-8", "replace")[:300]
        msg = f"{prefix}Qdrant answered HTTP {status}: {detail or getattr(exc, 'reason_phrase', '')}"
        meta: dict[str, object] = {"status": status, "exception": name}
        if status in (401, 403):
            return ErrInfo(ErrCode.AUTH, msg + "; check the key api_key_env names", meta)
        if status == 429:
            return ErrInfo(ErrCode.RATE_LIMIT, msg, meta)
        if status == 404 and ("doesn't exist" in detail or "not found" in detail.lower()):
            return common.not_created("qdrant collection", collection)
        if status in (408, 409) or status >= 500:
            return ErrInfo(ErrCode.TRANSIENT, msg, meta)
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, msg, meta)
    cause = getattr(exc, "source", None)
    if isinstance(cause, BaseException):
        # ResponseHandlingException: the request never got an answer.
        return _transport(cause, prefix, name)
    if isinstance(exc, TimeoutError):
        return ErrInfo(ErrCode.TIMEOUT, f"{prefix}timed out talking to Qdrant", {"exception": name})
    if isinstance(exc, OSError):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}connection to Qdrant lost: {exc}", {"exception": name})
    text = str(exc)
    if isinstance(exc, RuntimeError) and "already accessed" in text:
        return ErrInfo(
            ErrCode.DB_ERROR,
            f"{prefix}another process holds Qdrant's local storage; local mode allows one process at a time. "
            "Fix: wait for it to finish, or run a Qdrant server and set the store's url",
            {"exception": name},
        )
    if isinstance(exc, ValueError) and "not found" in text:
        return common.not_created("qdrant collection", collection)
    if isinstance(exc, ValueError | TypeError):
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, f"{prefix}Qdrant refused the request: {text}", {"exception": name})
    return ErrInfo(ErrCode.DB_ERROR, f"{prefix}{name}: {text}", {"exception": name})


def _transport(cause: BaseException, prefix: str, name: str) -> ErrInfo:
    cause_name = type(cause).__name__
    meta = {"exception": name, "cause": cause_name}
    if isinstance(cause, TimeoutError) or "Timeout" in cause_name:
        return ErrInfo(ErrCode.TIMEOUT, f"{prefix}timed out talking to Qdrant ({cause_name})", meta)
    return ErrInfo(ErrCode.TRANSIENT, f"{prefix}could not reach Qdrant ({cause_name}: {cause})", meta)


def create(config: QdrantConfig, resources: Resources) -> QdrantStore:
    """The adapter factory: a `QdrantStore` (its client opens on first use)."""
    return QdrantStore(config, resources)


__all__ = ["QdrantStore", "create", "error_info", "point_id"]
