"""The ``chroma`` vector store: Chroma's persistent client under ``.funcpipe/chroma``, or a Chroma server.

Install with ``pip install 'funcpipe-runner[chroma]'``. One collection holds
the chunks, with cosine distance; its metadata records the embedder's
fingerprint. Each record's Chroma metadata holds its source id, origin,
meta (as JSON), filter pairs and content hash (see
`funcpipe.adapters._store_common`); the chunk text is the document.

funcpipe always gives Chroma the vectors: collections are opened with no
embedding function, so Chroma never loads its default model (it would
download it). Anonymized telemetry is off.

A server is reached with Chroma's async HTTP client (the key, if any, in the
``x-chroma-token`` header); the embedded client blocks, so it runs in a
worker thread, one call at a time.

Ranking: vector only. Chroma's ``where_document`` is a substring filter, not
a ranking, and its keyword search is a Chroma Cloud feature, so keyword and
hybrid fail with ``SERVICE_SPECIFIC``.

Failures, as `ErrInfo` codes:

    server unreachable, connection lost      TRANSIENT
    timeouts                                 TIMEOUT
    authentication or authorization refused  AUTH
    rate or quota limits                     RATE_LIMIT
    a request Chroma refuses                 SERVICE_SPECIFIC
    Chroma's internal errors                 TRANSIENT
    collection missing                       DB_ERROR (run the ingest pipeline first)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from funcpipe.adapters import _store_common as common
from funcpipe.adapters._store_common import ClientCalls
from funcpipe.adapters.config import ChromaConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")

_PAGE = 1000


class ChromaStore:
    """A `VectorStorePort` over one Chroma collection.

    Args:
        config: the collection, and the server if any.
        resources: the run's resources: its state directory, secrets, and closing.
    """

    def __init__(self, config: ChromaConfig, resources: Resources) -> None:
        self._config = config
        self._resources = resources
        self._chroma = common.import_client("chromadb", "chroma", "chroma")
        self._client: Any = None
        self._thread_lock: threading.Lock | None = None
        self._collection: ClientCalls | None = None
        self._opening = asyncio.Lock()
        self._client_lock = asyncio.Lock()
        self._dim: int | None = None
        self._secrets: list[str] = []
        self._name = config.collection
        where = common.shown(config.url) if config.url else str(resources.state_dir / "chroma")
        self._where = f"chroma collection {self._name} at {where}"

    # -- plumbing --

    async def _open(self) -> tuple[Any, threading.Lock | None]:
        async with self._client_lock:
            if self._client is None:
                await self._connect()
            return self._client, self._thread_lock

    async def _connect(self) -> None:
        settings = self._chroma.config.Settings(anonymized_telemetry=False)
        if self._config.url is not None:
            parts = urlsplit(self._config.url)
            key = self._config.api_key_env
            headers = {"x-chroma-token": common.read_key(self._resources, key, self._secrets)} if key else None
            connecting = self._chroma.AsyncHttpClient(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https",
                headers=headers,
                settings=settings,
                tenant=self._config.tenant,
                database=self._config.database,
            )
            self._client = await connecting
        else:
            path = self._resources.state_dir / "chroma"
            path.mkdir(parents=True, exist_ok=True)
            client = await asyncio.to_thread(self._chroma.PersistentClient, path=str(path), settings=settings)
            self._client = client
            self._thread_lock = threading.Lock()

            async def close() -> None:
                # Clients of one directory share one system, stopped when the last one closes.
                await asyncio.to_thread(client.close)

            self._resources.close_later(close)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """A call on the client itself (collections are created and found there)."""
        client, lock = await self._open()
        fn = getattr(client, method)
        if lock is None:
            return await fn(**kwargs)
        return await asyncio.to_thread(fn, **kwargs)

    async def _find(self) -> ClientCalls | None:
        """The collection, or None if it does not exist."""
        if self._collection is None:
            async with self._opening:
                if self._collection is None:
                    try:
                        found = await self._call("get_collection", name=self._name, embedding_function=None)
                    except Exception as exc:
                        if type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc):
                            return None
                        raise
                    self._collection = ClientCalls(found, self._thread_lock)
        return self._collection

    def _plan(self, doing: str, body: Callable[[], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        # Chroma's async client sets no timeout: a silent server would hang the call.
        timeout = self._config.request_timeout if self._config.url is not None else None
        return common.guarded(self._describe, doing, body, timeout)

    def _describe(self, exc: BaseException, doing: str) -> ErrInfo:
        return common.redacted(error_info(exc, doing=f"{doing} {self._where}", collection=self._name), self._secrets)

    def _stored(self, collection: ClientCalls) -> Fingerprint | None:
        metadata = collection.target.metadata or {}
        return common.parse_fingerprint(metadata.get(common.FINGERPRINT_KEY))

    def _ready(self, doing: str, body: Callable[[ClientCalls, int], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            collection = await self._find()
            if collection is None:
                return Err(common.not_created("chroma collection", self._name))
            if self._dim is None:
                stored = self._stored(collection)
                if stored is None:
                    return Err(common.unrecorded("chroma collection", self._name, "collection"))
                self._dim = stored.dim
            return await body(collection, self._dim)

        return self._plan(doing, run)

    # -- ensure --

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Create the collection (cosine, the fingerprint in its metadata) if missing; check the fingerprint."""

        async def body() -> Result[None, ErrInfo]:
            collection = await self._find()
            if collection is None:
                created = await self._call(
                    "get_or_create_collection",
                    name=self._name,
                    metadata={common.FINGERPRINT_KEY: common.fingerprint_json(fingerprint)},
                    configuration={"hnsw": {"space": "cosine"}},
                    embedding_function=None,
                )
                collection = self._collection = ClientCalls(created, self._thread_lock)
            stored = self._stored(collection)
            if stored != fingerprint:
                return Err(common.mismatch("chroma collection", self._name, "collection", stored, fingerprint))
            self._dim = fingerprint.dim
            return Ok(None)

        return self._plan("create", body)

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the collection exists, and the fingerprint its metadata records; creates nothing."""

        async def body() -> Result[tuple[bool, Fingerprint | None], ErrInfo]:
            collection = await self._find()
            return Ok((False, None) if collection is None else (True, self._stored(collection)))

        return self._plan("read the embedder fingerprint of", body)

    # -- writes --

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id; returns the rows inserted or changed (identical ones are skipped)."""
        if not records:
            return async_pure(0)

        async def body(collection: ClientCalls, dim: int) -> Result[int, ErrInfo]:
            latest = common.checked(records, dim)
            if isinstance(latest, Err):
                return latest
            rows: dict[str, tuple[VectorRecord, dict[str, Any]]] = {}
            for r in latest.value.values():
                meta = common.meta_text(r.meta)
                metadata: dict[str, Any] = {
                    "source_id": r.source_id,
                    "origin": r.origin,
                    "meta": meta,
                    "hash": common.content_hash(r, meta, r.embedding),
                }
                found = common.pairs(r.meta)
                if found:
                    metadata["pairs"] = found  # Chroma refuses an empty list
                rows[r.id] = (r, metadata)
            stored = await collection.call("get", ids=list(rows), include=["metadatas"])
            same = {
                rid
                for rid, m in zip(stored["ids"], stored["metadatas"] or [], strict=False)
                if (m or {}).get("hash") == rows[rid][1]["hash"]
            }
            changed = [(rid, r, m) for rid, (r, m) in rows.items() if rid not in same]
            if changed:
                await collection.call(
                    "upsert",
                    ids=[rid for rid, _, _ in changed],
                    embeddings=[[float(x) for x in r.embedding] for _, r, _ in changed],
                    documents=[r.text for _, r, _ in changed],
                    metadatas=[m for _, _, m in changed],
                )
            return Ok(len(changed))

        return self._ready("upsert into", body)

    async def _ids(self, collection: ClientCalls, where: Mapping[str, Any]) -> list[str]:
        ids: list[str] = []
        while True:
            page = await collection.call("get", where=dict(where), include=[], limit=_PAGE, offset=len(ids))
            ids.extend(page["ids"])
            if len(page["ids"]) < _PAGE:
                return ids

    async def _delete(self, collection: ClientCalls, where: Mapping[str, Any], keep_ids: Sequence[str]) -> int:
        keep = set(keep_ids)
        gone = [i for i in await self._ids(collection, where) if i not in keep]
        if gone:
            await collection.call("delete", ids=gone)
        return len(gone)

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the rows of ``source_id`` whose id is not in ``keep_ids``; returns how many."""

        async def body(collection: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            return Ok(await self._delete(collection, {"source_id": source_id}, keep_ids))

        return self._ready("delete stale rows from", body)

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete the rows of ``origin`` of ``source_ids`` whose id is not in ``keep_ids``; returns how many."""
        if not source_ids:
            return async_pure(0)
        where = {"$and": [{"origin": origin}, {"source_id": {"$in": list(dict.fromkeys(source_ids))}}]}

        async def body(collection: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            return Ok(await self._delete(collection, where, keep_ids))

        return self._ready("delete rows from", body)

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""

        async def body(collection: ClientCalls, _dim: int) -> Result[list[str], ErrInfo]:
            seen: set[str] = set()
            offset = 0
            while True:
                page = await collection.call(
                    "get", where={"origin": origin}, include=["metadatas"], limit=_PAGE, offset=offset
                )
                seen.update(str((m or {}).get("source_id", "")) for m in page["metadatas"] or [])
                offset += len(page["ids"])
                if len(page["ids"]) < _PAGE:
                    return Ok(sorted(seen))

        return self._ready("list sources of", body)

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored, in one request."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return async_pure(set())

        async def body(collection: ClientCalls, _dim: int) -> Result[set[str], ErrInfo]:
            found = await collection.call("get", ids=wanted, include=[])
            return Ok(set(found["ids"]))

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
        """The ``top_k`` records nearest ``vector`` by cosine similarity, best first, ties by id.

        ``filter`` keeps records whose meta holds each of its scalar entries.
        """
        if mode != "vector":
            return async_fail(
                common.unsupported_mode(
                    "chroma",
                    mode,
                    "its local full-text support is a filter, not a ranking (keyword search is a Chroma Cloud feature)",
                )
            )
        wanted = common.filter_pairs("chroma", filter)
        if isinstance(wanted, Err):
            return async_fail(wanted.error)
        values = [float(x) for x in vector]
        clauses = [{"pairs": {"$contains": p}} for p in wanted.value]
        where = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}

        async def body(collection: ClientCalls, dim: int) -> Result[list[QueryHit], ErrInfo]:
            wrong = common.check_query(values, dim)
            if wrong is not None:
                return Err(wrong)
            found = await collection.call(
                "query",
                query_embeddings=[values],
                n_results=top_k,
                where=where,
                include=["metadatas", "documents", "distances"],
            )
            hits = [
                QueryHit(
                    rid,
                    str((m or {}).get("source_id", "")),
                    doc or "",
                    1.0 - float(distance),
                    common.load_meta((m or {}).get("meta")),
                )
                for rid, m, doc, distance in zip(
                    found["ids"][0], found["metadatas"][0], found["documents"][0], found["distances"][0], strict=True
                )
            ]
            return Ok(common.ranked(hits, top_k))

        return self._ready("query", body)

    def count(self) -> AsyncPlan[int]:
        """The number of records in the collection."""

        async def body(collection: ClientCalls, _dim: int) -> Result[int, ErrInfo]:
            return Ok(int(await collection.call("count")))

        return self._ready("count", body)


_AUTH = ("AuthorizationError", "ChromaAuthError", "AuthenticationError")
_LIMIT = ("RateLimitError", "QuotaError")
_REFUSED = ("InvalidArgumentError", "InvalidDimensionException", "DuplicateIDError", "BatchSizeExceededError")


def error_info(exc: BaseException, *, doing: str = "", collection: str = "") -> ErrInfo:
    """The `ErrInfo` for what the Chroma client raised (codes in the module docstring)."""
    prefix = f"{doing}: " if doing else ""
    name = type(exc).__name__
    text = str(exc)
    meta: dict[str, object] = {"exception": name}
    if name == "NotFoundError":
        return common.not_created("chroma collection", collection)
    if name in _AUTH:
        return ErrInfo(ErrCode.AUTH, f"{prefix}Chroma refused the credentials: {text}", meta)
    if name in _LIMIT:
        return ErrInfo(ErrCode.RATE_LIMIT, f"{prefix}{text}", meta)
    if name in _REFUSED:
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, f"{prefix}Chroma refused the request: {text}", meta)
    if name == "InternalError":
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}Chroma failed: {text}", meta)
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return ErrInfo(ErrCode.TIMEOUT, f"{prefix}timed out talking to Chroma", meta)
    if isinstance(exc, OSError) or name in ("ConnectError", "RemoteProtocolError", "ReadError", "WriteError"):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}connection to Chroma lost: {name}: {text}", meta)
    if "Could not connect" in text:
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}could not reach the Chroma server: {text}", meta)
    if isinstance(exc, ValueError | TypeError):
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, f"{prefix}Chroma refused the request: {text}", meta)
    return ErrInfo(ErrCode.DB_ERROR, f"{prefix}{name}: {text}", meta)


def create(config: ChromaConfig, resources: Resources) -> ChromaStore:
    """The adapter factory: a `ChromaStore` (its client opens on first use)."""
    return ChromaStore(config, resources)


__all__ = ["ChromaStore", "create", "error_info"]
