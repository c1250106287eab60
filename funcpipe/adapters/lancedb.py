"""The ``lancedb`` vector store: LanceDB embedded under ``.funcpipe/lancedb``, an object store, or LanceDB Cloud.

Install with ``pip install 'funcpipe-runner[lancedb]'``. One table holds the
chunks::

    id string, source_id string, origin string, text string, meta string (JSON),
    pairs list<string>, hash string, vector fixed_size_list<float32, dim>

Its schema metadata records the embedder's fingerprint. Vectors are stored
scaled to length 1 and ranked by dot product, which is their cosine
similarity; a zero vector stays zero and scores 0 (LanceDB's own cosine
drops such rows). Queries scan exactly: no approximate index is built.
Filters use the ``pairs`` column (see `funcpipe.adapters._store_common`).

LanceDB ranks text itself, with no download: `ensure` builds a full-text
index on ``text`` (and, on later runs, compacts the table and updates the
index), so ``keyword`` ranks by BM25 (the score is BM25's) and
``hybrid`` fuses the vector and keyword rankings by reciprocal rank fusion
(the score is the fused one). Every call uses LanceDB's async API, so
nothing blocks the event loop.

Failures, as `ErrInfo` codes:

    server unreachable, connection lost      TRANSIENT
    timeouts                                 TIMEOUT
    HTTP 401, 403                            AUTH
    HTTP 429                                 RATE_LIMIT
    a request LanceDB refuses                SERVICE_SPECIFIC
    the directory cannot be read or written  FATAL_DB
    table missing                            DB_ERROR (run the ingest pipeline first)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from funcpipe.adapters import _store_common as common
from funcpipe.adapters.config import LanceDBConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")

_COLUMNS = ["id", "source_id", "origin", "text", "meta"]
_MIN_CANDIDATES = 20


def literal(value: str) -> str:
    """``value`` as an SQL string literal for LanceDB's filters (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(literal(v) for v in values)})"


class LanceDBStore:
    """A `VectorStorePort` over one LanceDB table.

    Args:
        config: the table, and where the database is.
        resources: the run's resources: its state directory, secrets, and closing.
    """

    def __init__(self, config: LanceDBConfig, resources: Resources) -> None:
        self._config = config
        self._resources = resources
        self._lancedb = common.import_client("lancedb", "lancedb", "lancedb")
        self._pa: Any = common.import_client("pyarrow", "lancedb", "lancedb")
        self._db: Any = None
        self._table: Any = None
        self._opening = asyncio.Lock()
        self._dim: int | None = None
        self._secrets: list[str] = []
        self._name = config.table
        self._uri = config.uri or str(resources.state_dir / "lancedb")
        self._where = f"lancedb table {self._name} at {common.shown(self._uri)}"

    # -- plumbing --

    async def _connect(self) -> Any:
        if self._db is None:
            key = self._config.api_key_env
            kwargs: dict[str, Any] = {}
            if self._uri.startswith("db://"):
                kwargs = {
                    "api_key": common.read_key(self._resources, key, self._secrets),
                    "region": self._config.region or "us-east-1",
                    "host_override": self._config.host_override,
                    "client_config": {
                        # Retries belong to the stage's policy, which sees every attempt.
                        "retry_config": {"retries": 0},
                    },
                }
            elif "://" not in self._uri:
                await asyncio.to_thread(_mkdir, self._uri)
            self._db = await self._lancedb.connect_async(self._uri, **kwargs)
            self._resources.close_later(self._close)
        return self._db

    async def _close(self) -> None:
        if self._table is not None:
            self._table.close()
        if self._db is not None:
            self._db.close()

    async def _find(self) -> Any | None:
        """The table, or None if it does not exist."""
        async with self._opening:
            if self._table is None:
                db = await self._connect()
                try:
                    self._table = await db.open_table(self._name)
                except ValueError as exc:
                    if "not found" in str(exc) or "does not exist" in str(exc):
                        return None
                    raise
            return self._table

    def _plan(self, doing: str, body: Callable[[], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        # LanceDB's client reports a timeout as a failed read, like a dropped connection.
        timeout = self._config.request_timeout if self._uri.startswith("db://") else None
        return common.guarded(self._describe, doing, body, timeout)

    def _describe(self, exc: BaseException, doing: str) -> ErrInfo:
        return common.redacted(error_info(exc, doing=f"{doing} {self._where}", table=self._name), self._secrets)

    async def _stored(self, table: Any) -> Fingerprint | None:
        schema = await table.schema()
        raw = (schema.metadata or {}).get(common.FINGERPRINT_KEY.encode())
        return common.parse_fingerprint(raw.decode() if raw else None)

    def _ready(self, doing: str, body: Callable[[Any, int], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            table = await self._find()
            if table is None:
                return Err(common.not_created("lancedb table", self._name))
            if self._dim is None:
                stored = await self._stored(table)
                if stored is None:
                    return Err(common.unrecorded("lancedb table", self._name, "table"))
                self._dim = stored.dim
            return await body(table, self._dim)

        return self._plan(doing, run)

    def _schema(self, fingerprint: Fingerprint) -> Any:
        pa = self._pa
        return pa.schema(
            [
                pa.field("id", pa.string(), nullable=False),
                pa.field("source_id", pa.string(), nullable=False),
                pa.field("origin", pa.string(), nullable=False),
                pa.field("text", pa.string(), nullable=False),
                pa.field("meta", pa.string(), nullable=False),
                pa.field("pairs", pa.list_(pa.string())),
                pa.field("hash", pa.string(), nullable=False),
                pa.field("vector", pa.list_(pa.float32(), fingerprint.dim)),
            ],
            metadata={common.FINGERPRINT_KEY: common.fingerprint_json(fingerprint)},
        )

    # -- ensure --

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Create the table (fingerprint in its schema) and its full-text index if missing; check the fingerprint."""

        async def body() -> Result[None, ErrInfo]:
            table = await self._find()
            if table is None:
                db = await self._connect()
                table = await db.create_table(self._name, schema=self._schema(fingerprint), exist_ok=True)
                self._table = table
            stored = await self._stored(table)
            if stored != fingerprint:
                return Err(common.mismatch("lancedb table", self._name, "table", stored, fingerprint))
            if not any(index.columns == ["text"] for index in await table.list_indices()):
                await table.create_index("text", config=self._lancedb.index.FTS())
            elif await table.count_rows():
                # Each upsert commits a small fragment, and rows written since the
                # full-text index was built are searched by a scan: once per run,
                # compact the last run's fragments and bring the index up to date.
                await table.optimize()
            self._dim = fingerprint.dim
            return Ok(None)

        return self._plan("create", body)

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the table exists, and the fingerprint its schema records; creates nothing."""

        async def body() -> Result[tuple[bool, Fingerprint | None], ErrInfo]:
            table = await self._find()
            return Ok((False, None) if table is None else (True, await self._stored(table)))

        return self._plan("read the embedder fingerprint of", body)

    # -- writes --

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id in one commit; returns the rows inserted or changed."""
        if not records:
            return async_pure(0)

        async def body(table: Any, dim: int) -> Result[int, ErrInfo]:
            latest = common.checked(records, dim)
            if isinstance(latest, Err):
                return latest
            rows: dict[str, dict[str, Any]] = {}
            for r in latest.value.values():
                meta = common.meta_text(r.meta)
                rows[r.id] = {
                    "id": r.id,
                    "source_id": r.source_id,
                    "origin": r.origin,
                    "text": r.text,
                    "meta": meta,
                    "pairs": common.pairs(r.meta),
                    "hash": common.content_hash(r, meta, r.embedding),
                    "vector": common.unit(r.embedding),
                }
            stored = await table.query().where(_in("id", list(rows))).select(["id", "hash"]).to_list()
            same = {s["id"] for s in stored if s["hash"] == rows[s["id"]]["hash"]}
            changed = [row for rid, row in rows.items() if rid not in same]
            if changed:
                data = self._pa.Table.from_pylist(changed, schema=await table.schema())
                await table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            return Ok(len(changed))

        return self._ready("upsert into", body)

    async def _delete(self, table: Any, predicate: str) -> int:
        result = await table.delete(predicate)
        return int(getattr(result, "num_deleted_rows", 0) or 0)

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the rows of ``source_id`` whose id is not in ``keep_ids``; returns how many."""
        predicate = f"source_id = {literal(source_id)}" + (f" AND NOT ({_in('id', keep_ids)})" if keep_ids else "")

        async def body(table: Any, _dim: int) -> Result[int, ErrInfo]:
            return Ok(await self._delete(table, predicate))

        return self._ready("delete stale rows from", body)

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete the rows of ``origin`` of ``source_ids`` whose id is not in ``keep_ids``; returns how many."""
        if not source_ids:
            return async_pure(0)
        predicate = f"origin = {literal(origin)} AND {_in('source_id', list(dict.fromkeys(source_ids)))}"
        if keep_ids:
            predicate += f" AND NOT ({_in('id', keep_ids)})"

        async def body(table: Any, _dim: int) -> Result[int, ErrInfo]:
            return Ok(await self._delete(table, predicate))

        return self._ready("delete rows from", body)

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""

        async def body(table: Any, _dim: int) -> Result[list[str], ErrInfo]:
            found = await table.query().where(f"origin = {literal(origin)}").select(["source_id"]).to_arrow()
            return Ok(sorted(set(found.column("source_id").to_pylist())))

        return self._ready("list sources of", body)

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored, in one query."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return async_pure(set())

        async def body(table: Any, _dim: int) -> Result[set[str], ErrInfo]:
            found = await table.query().where(_in("id", wanted)).select(["id"]).to_arrow()
            return Ok(set(found.column("id").to_pylist()))

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
        """The ``top_k`` best rows, best first, ties by id.

        ``vector`` ranks by cosine similarity; ``keyword`` by BM25 over the
        text; ``hybrid`` fuses both rankings (reciprocal rank fusion).
        ``filter`` keeps rows whose meta holds each of its scalar entries.
        """
        wanted = common.filter_pairs("lancedb", filter)
        if isinstance(wanted, Err):
            return async_fail(wanted.error)
        if mode != "vector" and not (text or "").strip():
            return async_fail(
                ErrInfo(ErrCode.SERVICE_SPECIFIC, f"query mode {mode} needs the question's text", {"mode": mode})
            )
        where = " AND ".join(f"array_has(pairs, {literal(p)})" for p in wanted.value) or None
        values = [float(x) for x in vector]
        candidates = max(2 * top_k, _MIN_CANDIDATES)

        async def body(table: Any, dim: int) -> Result[list[QueryHit], ErrInfo]:
            if mode == "keyword":
                return Ok(await self._keyword(table, text or "", where, top_k))
            wrong = common.check_query(values, dim)
            if wrong is not None:
                return Err(wrong)
            if mode == "vector":
                return Ok(await self._nearest(table, values, where, top_k))
            nearest = await self._nearest(table, values, where, candidates)
            keyword = await self._keyword(table, text or "", where, candidates)
            return Ok(common.fuse([nearest, keyword], top_k))

        return self._ready("query", body)

    async def _nearest(self, table: Any, vector: list[float], where: str | None, limit: int) -> list[QueryHit]:
        query = table.query().nearest_to(common.unit(vector)).distance_type("dot").limit(limit)
        if where:
            query = query.where(where)
        rows = await query.select([*_COLUMNS, "_distance"]).to_list()
        # With unit vectors, dot distance is 1 - cosine similarity.
        return common.ranked([_hit(row, 1.0 - float(row["_distance"])) for row in rows], limit)

    async def _keyword(self, table: Any, text: str, where: str | None, limit: int) -> list[QueryHit]:
        query = table.query().nearest_to_text(_plain_words(text)).limit(limit)
        if where:
            query = query.where(where)
        rows = await query.select([*_COLUMNS, "_score"]).to_list()
        return common.ranked([_hit(row, float(row["_score"])) for row in rows], limit)

    def count(self) -> AsyncPlan[int]:
        """The number of rows in the table."""

        async def body(table: Any, _dim: int) -> Result[int, ErrInfo]:
            return Ok(int(await table.count_rows()))

        return self._ready("count", body)


def _mkdir(uri: str) -> None:
    from pathlib import Path

    Path(uri).mkdir(parents=True, exist_ok=True)


_WORD = re.compile(r"\w+")


def _plain_words(text: str) -> str:
    # The full-text parser gives meaning to quotes and operators; a question is plain words.
    return " ".join(_WORD.findall(text))


def _hit(row: Mapping[str, Any], score: float) -> QueryHit:
    return QueryHit(str(row["id"]), str(row["source_id"]), str(row["text"]), score, common.load_meta(row.get("meta")))


_STATUS = re.compile(r"\) ([1-5][0-9]{2}) [A-Z]")  # "(request_id=...) 401 Unauthorized"


def error_info(exc: BaseException, *, doing: str = "", table: str = "") -> ErrInfo:
    """The `ErrInfo` for what LanceDB raised (codes in the module docstring)."""
    prefix = f"{doing}: " if doing else ""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    meta: dict[str, object] = {"exception": name}
    lowered = text.lower()
    if "was not found" in lowered or "table not found" in lowered:
        return common.not_created("lancedb table", table)
    if isinstance(exc, TimeoutError) or "timed out" in lowered or "timeout" in lowered:
        return ErrInfo(ErrCode.TIMEOUT, f"{prefix}timed out talking to LanceDB", meta)
    code = getattr(exc, "status_code", None)
    if not isinstance(code, int):
        found = _STATUS.search(text)
        code = int(found.group(1)) if found else None
    if name == "RetryError":
        # LanceDB's client gave up on a connection, a 429 or a 5xx: the next attempt may succeed.
        rate = code == 429
        return ErrInfo(
            ErrCode.RATE_LIMIT if rate else ErrCode.TRANSIENT, f"{prefix}could not use LanceDB: {text}", meta
        )
    if code is not None:
        meta["status"] = code
        if code in (401, 403):
            return ErrInfo(ErrCode.AUTH, f"{prefix}LanceDB refused the credentials: {text}", meta)
        if code == 429:
            return ErrInfo(ErrCode.RATE_LIMIT, f"{prefix}{text}", meta)
        if code >= 500 or code in (408, 409):
            return ErrInfo(ErrCode.TRANSIENT, f"{prefix}LanceDB failed: {text}", meta)
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, f"{prefix}LanceDB refused the request: {text}", meta)
    if any(w in lowered for w in ("connection refused", "connect error", "error sending request", "connection reset")):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}could not reach LanceDB: {text}", meta)
    if "permission denied" in lowered or "read-only file system" in lowered or "not a directory" in lowered:
        return ErrInfo(
            ErrCode.FATAL_DB,
            f"{prefix}LanceDB cannot use its directory: {text}. Fix: make the directory writable, or set the "
            "store's uri",
            meta,
        )
    if isinstance(exc, OSError):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}LanceDB I/O failed: {text}", meta)
    if isinstance(exc, ValueError | TypeError):
        return ErrInfo(ErrCode.SERVICE_SPECIFIC, f"{prefix}LanceDB refused the request: {text}", meta)
    return ErrInfo(ErrCode.DB_ERROR, f"{prefix}{name}: {text}", meta)


def create(config: LanceDBConfig, resources: Resources) -> LanceDBStore:
    """The adapter factory: a `LanceDBStore` (it connects on first use)."""
    return LanceDBStore(config, resources)


__all__ = ["LanceDBStore", "create", "error_info", "literal"]
