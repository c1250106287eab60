"""The pgvector store itself: `PgvectorStore` over one table, and the adapter factory."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from funcpipe.adapters._retrieval import fusion_depth, rrf
from funcpipe.adapters._storable import meta_json, refusal
from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.pgvector import _fts
from funcpipe.adapters.pgvector._errors import _connection, error_info
from funcpipe.adapters.pgvector._sql import derived_name, quote_ident, register_vector_codec
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.ports import Embedding, Fingerprint, QueryHit, RetrievalMode, VectorRecord

T = TypeVar("T")

_STAGE = "funcpipe_upsert_stage"
# One advisory lock for every ensure: creating the extension, a schema or an
# index concurrently would otherwise race on the catalogs.
_ENSURE_LOCK = int.from_bytes(hashlib.sha256(b"funcpipe.pgvector.ensure").digest()[:8], "big", signed=True)
_COMMENT_KEY = "funcpipe_embedder"
_MAX_EF_SEARCH = 1000
_DEFAULT_EF_SEARCH = 40


def _fingerprint_comment(fingerprint: Fingerprint) -> str:
    value = {"kind": fingerprint.kind, "model": fingerprint.model, "dim": fingerprint.dim}
    return json.dumps({_COMMENT_KEY: value}, sort_keys=True)


def _stored_fingerprint(comment: str | None) -> Fingerprint | None:
    if not comment:
        return None
    try:
        value = json.loads(comment)[_COMMENT_KEY]
        return Fingerprint(str(value["kind"]), str(value["model"]), int(value["dim"]))
    except (ValueError, KeyError, TypeError):
        return None


def _meta_json(meta: Mapping[str, object]) -> str:
    return json.dumps(dict(meta), default=str, ensure_ascii=False, allow_nan=False, sort_keys=True)


def _meta(value: object) -> dict[str, object]:
    # asyncpg hands jsonb over as text, unless a codec was set on the pool.
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded) if isinstance(loaded, Mapping) else {}


def _status_count(status: str) -> int:
    """The row count of a command tag such as ``INSERT 0 12`` or ``DELETE 3``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _score(distance: float | None) -> float:
    # A zero vector has no direction: pgvector gives NaN; call it unrelated.
    if distance is None or math.isnan(distance):
        return 0.0
    return 1.0 - distance


class PgvectorStore:
    """A `VectorStorePort` over one pgvector table.

    Args:
        config: table, schema, dsn, index and query settings.
        resources: the run's resources; the pool comes from ``resources.pg_pool``.
    """

    def __init__(self, config: PgvectorConfig, resources: Resources) -> None:
        self._config = config
        self._resources = resources
        self._name = f"{config.db_schema}.{config.table}"
        self._schema = quote_ident(config.db_schema)
        self._table = f"{self._schema}.{quote_ident(config.table)}"
        self._hnsw_index_name = derived_name(config.table, "embedding_hnsw")
        self._hnsw_definition = f"ON {self._table} USING hnsw (embedding vector_cosine_ops)"
        self._source_index_name = derived_name(config.table, "source_id")
        self._origin_index_name = derived_name(config.table, "origin_source_id")
        self._fts_index_name = derived_name(config.table, "fts_gin")
        self._iterative_scan: bool | None = None
        self._merge = (
            f"INSERT INTO {self._table} AS t (id, source_id, text, meta, embedding, origin, updated_at) "
            f"SELECT id, source_id, text, meta, embedding, origin, now() FROM pg_temp.{_STAGE} "
            "ON CONFLICT (id) DO UPDATE SET source_id = EXCLUDED.source_id, text = EXCLUDED.text, "
            "meta = EXCLUDED.meta, embedding = EXCLUDED.embedding, origin = EXCLUDED.origin, "
            "updated_at = EXCLUDED.updated_at "
            "WHERE (t.source_id, t.text, t.meta, t.embedding, t.origin) "
            "IS DISTINCT FROM (EXCLUDED.source_id, EXCLUDED.text, EXCLUDED.meta, EXCLUDED.embedding, EXCLUDED.origin)"
        )

    @property
    def name(self) -> str:
        """``schema.table``, unquoted, for messages."""
        return self._name

    async def _pool(self) -> asyncpg.Pool:
        return await self._resources.pg_pool(
            self._config.dsn, max_size=self._config.pool_max, init=register_vector_codec
        )

    def _plan(self, doing: str, body: Callable[[asyncpg.Pool], Awaitable[Result[T, ErrInfo]]]) -> AsyncPlan[T]:
        async def run() -> Result[T, ErrInfo]:
            try:
                return await body(await self._pool())
            except Exception as exc:
                return Err(error_info(exc, doing=f"{doing} {self._name}"))

        return run

    # -- ensure --

    def ensure(self, fingerprint: Fingerprint) -> AsyncPlan[None]:
        """Create the extension, schema, table and indexes that are missing; check the fingerprint.

        The vector index of an empty table is left for `finish_load`, after the bulk load.
        """

        async def body(pool: asyncpg.Pool) -> Result[None, ErrInfo]:
            async with _connection(pool) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _ENSURE_LOCK)
                if not await conn.fetchval("SELECT true FROM pg_catalog.pg_extension WHERE extname = 'vector'"):
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                if not await conn.fetchval(
                    "SELECT true FROM pg_catalog.pg_namespace WHERE nspname = $1", self._config.db_schema
                ):
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
                row = await conn.fetchrow(
                    "SELECT pg_catalog.obj_description(c.oid, 'pg_class') AS comment "
                    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                    self._config.db_schema,
                    self._config.table,
                )
                if row is None:
                    await self._create_table(conn, fingerprint)
                else:
                    stored = _stored_fingerprint(row["comment"])
                    if stored != fingerprint:
                        return Err(self._mismatch(stored, fingerprint))
                    await self._add_origin_column(conn)
                    fts = await _fts.ensure_column(
                        conn, self._config.db_schema, self._config.table, self._table, self._config.language
                    )
                    if fts is not None:
                        return Err(fts)
                await self._create_indexes(conn)
            # Connections opened before the extension existed have no vector
            # codec; replace them as they come back to the pool.
            await pool.expire_connections()
            return Ok(None)

        return self._plan("ensure", body)

    def stored_fingerprint(self) -> AsyncPlan[tuple[bool, Fingerprint | None]]:
        """Whether the table exists, and the embedder fingerprint its comment records; creates nothing.

        ``(False, None)``: no table yet. ``(True, None)``: a table that records
        no fingerprint (funcpipe did not create it).
        """

        async def body(pool: asyncpg.Pool) -> Result[tuple[bool, Fingerprint | None], ErrInfo]:
            async with _connection(pool) as conn:
                row = await conn.fetchrow(
                    "SELECT pg_catalog.obj_description(c.oid, 'pg_class') AS comment "
                    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                    self._config.db_schema,
                    self._config.table,
                )
            if row is None:
                return Ok((False, None))
            return Ok((True, _stored_fingerprint(row["comment"])))

        return self._plan("read the embedder fingerprint of", body)

    async def _create_table(self, conn: asyncpg.Connection, fingerprint: Fingerprint) -> None:
        await conn.execute(
            f"CREATE TABLE {self._table} ("
            "id text PRIMARY KEY, source_id text NOT NULL, text text NOT NULL, "
            "meta jsonb NOT NULL DEFAULT '{}'::jsonb, "
            f"embedding vector({int(fingerprint.dim)}) NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT now(), origin text NOT NULL DEFAULT '', "
            f"{_fts.column_sql(self._config.language)})"
        )
        # COMMENT takes no parameters: let the server quote the literal.
        comment_sql = await conn.fetchval(
            "SELECT pg_catalog.format('COMMENT ON TABLE %I.%I IS %L', $1::text, $2::text, $3::text)",
            self._config.db_schema,
            self._config.table,
            _fingerprint_comment(fingerprint),
        )
        await conn.execute(comment_sql)

    async def _add_origin_column(self, conn: asyncpg.Connection) -> None:
        # Tables made before source sync: their rows get origin '', which no sync deletes.
        has = await conn.fetchval(
            "SELECT true FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = 'origin' AND NOT a.attisdropped",
            self._config.db_schema,
            self._config.table,
        )
        if not has:
            await conn.execute(f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT ''")

    async def _create_indexes(self, conn: asyncpg.Connection) -> None:
        wanted = {
            self._source_index_name: f"ON {self._table} (source_id)",
            self._origin_index_name: f"ON {self._table} (origin, source_id)",
            self._fts_index_name: f"ON {self._table} USING gin ({_fts.COLUMN})",
        }
        if self._config.index == "hnsw" and not await self._load_first(conn):
            wanted[self._hnsw_index_name] = self._hnsw_definition
        # Only what is missing: CREATE INDEX IF NOT EXISTS would still lock the
        # table against writers and require ownership.
        existing = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relname = ANY($2::text[])",
                self._config.db_schema,
                list(wanted),
            )
        }
        for name, definition in wanted.items():
            if name not in existing:
                await conn.execute(f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} {definition}")

    async def _load_first(self, conn: asyncpg.Connection) -> bool:
        """Whether the vector index waits for `finish_load`: the table is empty, so a bulk load comes first.

        Building an HNSW index once over loaded rows is several times faster
        than maintaining it on every insert. A table that has rows (a later,
        incremental run, or a load cut short by a crash) gets its index at
        once, so it is never left without one past the end of a run.
        """
        return not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self._table})")

    def finish_load(self) -> AsyncPlan[bool]:
        """Build the vector index that `ensure` left for after the load; True if it was built now.

        Idempotent: with the index present (or ``index: none``, or no table)
        it does nothing. Queries work before it exists, by exact scan.
        """

        async def body(pool: asyncpg.Pool) -> Result[bool, ErrInfo]:
            if self._config.index != "hnsw":
                return Ok(False)
            async with _connection(pool) as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _ENSURE_LOCK)
                present = await conn.fetchrow(
                    "SELECT (SELECT true FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) "
                    "AS has_table, (SELECT true FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $3) AS has_index",
                    self._config.db_schema,
                    self._config.table,
                    self._hnsw_index_name,
                )
                if not present["has_table"] or present["has_index"]:
                    return Ok(False)
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote_ident(self._hnsw_index_name)} {self._hnsw_definition}"
                )
            return Ok(True)

        return self._plan("build the vector index of", body)

    def _mismatch(self, stored: Fingerprint | None, configured: Fingerprint) -> ErrInfo:
        if stored is None:
            msg = (
                f"table {self._name} exists but records no embedder fingerprint (funcpipe did not create it); "
                f"the configured embedder is {configured}. Fix: point the store at another table, "
                f"or drop {self._name} if its rows are disposable"
            )
        else:
            msg = (
                f"table {self._name} holds vectors from embedder {stored}, but the configured embedder is "
                f"{configured}; vectors of different embedders cannot be compared. Fix: point the store at "
                f"another table (adapters.<store>.table), or drop table {self._name} to re-embed everything"
            )
        return ErrInfo(
            ErrCode.SERVICE_SPECIFIC,
            msg,
            {"stored": str(stored) if stored else None, "configured": str(configured), "table": self._name},
        )

    # -- writes --

    def upsert(self, records: Sequence[VectorRecord]) -> AsyncPlan[int]:
        """Insert or replace ``records`` by id in one transaction.

        A later record with the same id wins. Returns the rows inserted or
        changed: rewriting identical content counts zero and writes nothing.
        A record holding what PostgreSQL refuses (NUL, a lone surrogate, NaN
        in meta) fails the call with ``BAD_INPUT`` naming it, its field, the
        character and its offset, before anything is sent.
        """
        latest = {r.id: r for r in records}
        rows = []
        for r in latest.values():
            meta = meta_json(r.meta)
            refused = refusal(r, meta)
            if refused is not None or meta is None:
                # Refused before sending: a raw error would not say which record, nor where.
                return async_fail(refused or ErrInfo(ErrCode.BAD_INPUT, f"record {r.id}: meta is not JSON"))
            # The vector codec checks and converts the values (array("f", ...)).
            rows.append((r.id, r.source_id, r.text, meta, r.embedding, r.origin))

        if not rows:
            return async_pure(0)

        async def body(pool: asyncpg.Pool) -> Result[int, ErrInfo]:
            async with _connection(pool) as conn, conn.transaction():
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                    "(id text, source_id text, text text, meta jsonb, embedding vector, origin text) "
                    "ON COMMIT DELETE ROWS"
                )
                await conn.copy_records_to_table(
                    _STAGE,
                    schema_name="pg_temp",
                    records=rows,
                    columns=("id", "source_id", "text", "meta", "embedding", "origin"),
                )
                status = await conn.execute(self._merge)
            return Ok(_status_count(status))

        return self._plan("upsert into", body)

    def delete_stale(self, source_id: str, keep_ids: Sequence[str]) -> AsyncPlan[int]:
        """Delete the rows of ``source_id`` whose id is not in ``keep_ids``; returns how many."""
        keep = list(keep_ids)

        async def body(pool: asyncpg.Pool) -> Result[int, ErrInfo]:
            async with _connection(pool) as conn:
                status = await conn.execute(
                    f"DELETE FROM {self._table} WHERE source_id = $1 AND NOT (id = ANY($2::text[]))", source_id, keep
                )
            return Ok(_status_count(status))

        return self._plan("delete stale rows from", body)

    def prune(self, origin: str, source_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> AsyncPlan[int]:
        """Delete in one statement the rows of ``origin`` of ``source_ids`` whose id is not in ``keep_ids``."""
        sources, keep = list(source_ids), list(keep_ids)
        if not sources:
            return async_pure(0)

        async def body(pool: asyncpg.Pool) -> Result[int, ErrInfo]:
            status = await pool.execute(
                f"DELETE FROM {self._table} WHERE origin = $1 AND source_id = ANY($2::text[]) "
                "AND NOT (id = ANY($3::text[]))",
                origin,
                sources,
                keep,
            )
            return Ok(_status_count(status))

        return self._plan("delete rows from", body)

    def source_ids(self, origin: str) -> AsyncPlan[list[str]]:
        """The distinct source ids of the rows of ``origin``, sorted."""

        async def body(pool: asyncpg.Pool) -> Result[list[str], ErrInfo]:
            rows = await pool.fetch(
                f"SELECT DISTINCT source_id FROM {self._table} WHERE origin = $1 ORDER BY source_id", origin
            )
            return Ok([r["source_id"] for r in rows])

        return self._plan("list sources of", body)

    def existing_ids(self, ids: Sequence[str]) -> AsyncPlan[set[str]]:
        """The ids among ``ids`` that are stored, in one statement."""
        wanted = list(dict.fromkeys(ids))

        async def body(pool: asyncpg.Pool) -> Result[set[str], ErrInfo]:
            if not wanted:
                return Ok(set())
            rows = await pool.fetch(f"SELECT id FROM {self._table} WHERE id = ANY($1::text[])", wanted)
            return Ok({r["id"] for r in rows})

        return self._plan("look up ids in", body)

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
        """The ``top_k`` best rows for ``mode``, best first, ties by id.

        ``vector`` ranks by cosine distance to ``vector``; ``keyword`` by the
        BM25 score of ``text`` over the ``fts`` column (rows sharing no
        lexeme are left out); ``hybrid`` fuses the first `fusion_depth` rows
        of both by reciprocal rank fusion (``rrf_k``), in one read-only
        transaction. ``filter`` keeps rows whose meta contains it (jsonb
        ``@>``: equality for scalar values). With ``exact`` the vector index
        is bypassed, so results are exact and reproducible; otherwise HNSW
        answers, searching at least as many candidates as asked for and
        scanning on while a filter rejects them.
        """
        if mode != "vector" and text is None:
            return async_fail(ErrInfo(ErrCode.SERVICE_SPECIFIC, f"a {mode} query needs the question's text"))
        depth = top_k if mode != "hybrid" else max(top_k, fusion_depth(top_k))
        flt = _meta_json(filter) if filter else None
        where = "WHERE meta @> $3::jsonb" if filter else ""
        vector_sql = (
            f"SELECT id, source_id, text, meta, embedding <=> $1 AS distance FROM {self._table} {where} "
            "ORDER BY distance, id LIMIT $2"
        )
        keyword_sql = _fts.keyword_sql(self._table, filtered=filter is not None and bool(filter))
        values = [float(x) for x in vector]

        async def by_vector(conn: asyncpg.Connection) -> list[tuple[asyncpg.Record, float]]:
            if self._config.exact:
                await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            else:
                ef = max(_DEFAULT_EF_SEARCH, min(_MAX_EF_SEARCH, depth))
                await conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                if filter and await self._has_iterative_scan(conn):
                    # Without it, HNSW stops after ef_search candidates and a
                    # selective filter can leave fewer than top_k hits.
                    await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            args: list[Any] = [values, depth] + ([flt] if flt else [])
            return [(r, _score(r["distance"])) for r in await conn.fetch(vector_sql, *args)]

        async def by_keyword(conn: asyncpg.Connection) -> list[tuple[asyncpg.Record, float]]:
            args: list[Any] = [self._config.language, text or "", depth] + ([flt] if flt else [])
            return [(r, float(r["score"])) for r in await conn.fetch(keyword_sql, *args)]

        def hit(r: asyncpg.Record, score: float, scores: dict[str, float]) -> QueryHit:
            return QueryHit(r["id"], r["source_id"], r["text"], score, _meta(r["meta"]), scores)

        async def body(pool: asyncpg.Pool) -> Result[list[QueryHit], ErrInfo]:
            try:
                async with _connection(pool) as conn, conn.transaction(readonly=True):
                    if mode == "keyword":
                        return Ok([hit(r, s, {"keyword": s}) for r, s in await by_keyword(conn)])
                    vectors = await by_vector(conn)
                    if mode == "vector":
                        return Ok([hit(r, s, {"vector": s}) for r, s in vectors])
                    keywords = await by_keyword(conn)
            except asyncpg.UndefinedColumnError as exc:
                if _fts.COLUMN not in str(exc):
                    raise
                return Err(
                    ErrInfo(
                        ErrCode.SERVICE_SPECIFIC,
                        f"table {self._name} has no full-text column yet (it was made before keyword search): "
                        f"run the ingest pipeline once (funcpipe run) to add it, or query with mode: vector",
                        {"table": self._name, "mode": mode},
                    )
                )
            rows = {r["id"]: r for r, _ in [*vectors, *keywords]}
            own = {"vector": {r["id"]: s for r, s in vectors}, "keyword": {r["id"]: s for r, s in keywords}}
            fused = rrf([[r["id"] for r, _ in vectors], [r["id"] for r, _ in keywords]], self._config.rrf_k)
            return Ok(
                [
                    hit(rows[rid], s, {name: scores[rid] for name, scores in own.items() if rid in scores})
                    for rid, s in fused[:top_k]
                ]
            )

        return self._plan("query", body)

    async def _has_iterative_scan(self, conn: asyncpg.Connection) -> bool:
        if self._iterative_scan is None:
            version = await conn.fetchval("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'vector'")
            major_minor = tuple(int(p) for p in str(version or "0.0").split(".")[:2] if p.isdigit())
            self._iterative_scan = major_minor >= (0, 8)
        return self._iterative_scan

    def count(self) -> AsyncPlan[int]:
        """The number of rows in the table."""

        async def body(pool: asyncpg.Pool) -> Result[int, ErrInfo]:
            async with _connection(pool) as conn:
                return Ok(int(await conn.fetchval(f"SELECT count(*) FROM {self._table}")))

        return self._plan("count", body)


def create(config: PgvectorConfig, resources: Resources) -> PgvectorStore:
    """The adapter factory: a `PgvectorStore` (the pool is opened on first use)."""
    return PgvectorStore(config, resources)
