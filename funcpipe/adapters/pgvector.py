"""The ``pgvector`` vector store: PostgreSQL with the pgvector extension, on asyncpg.

With no ``dsn`` the store uses the embedded server the run's resources start
under ``.funcpipe/pgdata``; with one, any PostgreSQL where pgvector is
installed (in a schema on the search path). One table holds the chunks::

    id text PRIMARY KEY, source_id text, text text, meta jsonb,
    embedding vector(dim), updated_at timestamptz, origin text

``origin`` names the pipeline and source stage that wrote a row, so source
sync (`prune`) deletes only its own rows; tables made before it existed get
the column (``''`` for old rows) from `ensure`.

Its comment records the embedder's fingerprint; writing with another
embedder is refused with both fingerprints named. An upsert is a binary COPY
into a session-temporary table, then one ``INSERT ... ON CONFLICT (id) DO
UPDATE``, in one transaction; rows whose content did not change are not
rewritten. Names are validated by the config and always quoted here.

Failures are `ErrInfo` values, never exceptions, coded from the SQLSTATE,
or for client-side errors from what asyncpg raised:

    08xxx, 40xxx, 57P01-57P03, 53300, 55P03, 25P03   TRANSIENT   (lost connection, conflict, restart)
    OSError from the socket (reset, refused, gone)   TRANSIENT   (server down or restarting)
    InterfaceError: connection closed, or another    TRANSIENT   (a connection the server dropped
      operation in progress; InternalClientError                  mid-operation: its protocol state
      (protocol state desynchronised)                             is lost)
    stale prepared statement or schema cache         TRANSIENT
    57014 (statement_timeout), client timeouts       TIMEOUT
    28xxx, 3D000, 42501, 0A000, 58xxx, 53100, XX     FATAL_DB    (retrying cannot help)
    anything else                                    DB_ERROR

08xxx covers asyncpg's ConnectionDoesNotExistError; 57P01 is AdminShutdown
(``pg_terminate_backend``, a fast shutdown), 57P02 CrashShutdown, 57P03
CannotConnectNowError (starting up or shutting down). A connection that
raised anything but an ordinary server error (one that leaves the session
usable, such as a constraint violation) is terminated, not returned to the
pool, so a retry never meets the same broken connection; the pool opens a
fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from funcpipe.adapters._storable import meta_json, refusal
from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result, async_fail, async_pure
from funcpipe.errors import ResourceError
from funcpipe.ports import Embedding, Fingerprint, QueryHit, VectorRecord

T = TypeVar("T")

_MAX_IDENT = 63
_STAGE = "funcpipe_upsert_stage"
# One advisory lock for every ensure: creating the extension, a schema or an
# index concurrently would otherwise race on the catalogs.
_ENSURE_LOCK = int.from_bytes(hashlib.sha256(b"funcpipe.pgvector.ensure").digest()[:8], "big", signed=True)
_COMMENT_KEY = "funcpipe_embedder"
_MAX_EF_SEARCH = 1000
_DEFAULT_EF_SEARCH = 40


# -- SQL text -----------------------------------------------------------------


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: in double quotes, inner quotes doubled.

    Raises:
        ValueError: if ``name`` is empty, longer than 63 bytes or holds a NUL.
    """
    if not name or "\x00" in name or len(name.encode("utf-8")) > _MAX_IDENT:
        raise ValueError(f"{name!r} cannot be an SQL identifier (empty, NUL, or over {_MAX_IDENT} bytes)")
    return '"' + name.replace('"', '""') + '"'


def derived_name(table: str, suffix: str) -> str:
    """The name of an object belonging to ``table`` (``<table>_<suffix>``), at most 63 bytes.

    A name too long is shortened with a hash of the full one, so two long
    table names never share an index name.
    """
    name = f"{table}_{suffix}"
    if len(name.encode("utf-8")) <= _MAX_IDENT:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    keep = _MAX_IDENT - len(suffix) - len(digest) - 2
    return f"{table.encode('utf-8')[:keep].decode('utf-8', 'ignore')}_{digest}_{suffix}"


# -- the vector codec ----------------------------------------------------------

_BIG_ENDIAN = sys.byteorder == "big"


def encode_vector(value: Sequence[float]) -> bytes:
    """pgvector's binary wire format: int16 dimension, int16 zero, float4 values, big-endian."""
    values = array("f", value)
    if not _BIG_ENDIAN:
        values.byteswap()
    return len(values).to_bytes(2, "big") + b"\x00\x00" + values.tobytes()


def decode_vector(data: bytes) -> list[float]:
    """The values of a vector in pgvector's binary wire format."""
    dim = int.from_bytes(data[:2], "big")
    values = array("f")
    values.frombytes(data[4 : 4 + 4 * dim])
    if not _BIG_ENDIAN:
        values.byteswap()
    return values.tolist()


async def register_vector_codec(conn: asyncpg.Connection) -> bool:
    """Teach ``conn`` to send and receive ``vector`` values as lists of floats.

    Returns:
        False if the extension is not installed yet (nothing to register).
    """
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
        "JOIN pg_catalog.pg_extension e ON e.extnamespace = n.oid AND e.extname = 'vector' "
        "WHERE t.typname = 'vector'"
    )
    if schema is None:
        return False
    await conn.set_type_codec("vector", schema=schema, encoder=encode_vector, decoder=decode_vector, format="binary")
    return True


# -- errors ---------------------------------------------------------------------

_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "55P03", "25P03"})
_FATAL_STATES = frozenset({"3D000", "42501", "0A000", "53100", "53200"})
_FATAL_CLASSES = ("28", "58", "XX")
_HINTS = {
    "28": "the server rejected the credentials: check the user and password of the dsn",
    "3D000": "the database named in the dsn does not exist: create it or fix the dsn",
    "42501": "the database user lacks a privilege it needs here: grant it, or use another user",
    "0A000": "the server lacks a feature funcpipe needs: install pgvector (CREATE EXTENSION vector), "
    "or remove dsn to use the embedded server",
    "58P01": "install pgvector on the server (CREATE EXTENSION vector), or remove dsn to use the embedded server",
    "42P01": "the table does not exist yet: run the ingest pipeline first (its vector.upsert creates it)",
    "53100": "the database server's disk is full",
}


def _hint(sqlstate: str) -> str | None:
    return _HINTS.get(sqlstate) or _HINTS.get(sqlstate[:2])


def _code_of(sqlstate: str) -> str:
    if sqlstate.startswith(("08", "40")) or sqlstate in _TRANSIENT_STATES:
        return ErrCode.TRANSIENT
    if sqlstate == "57014":
        return ErrCode.TIMEOUT
    if sqlstate in _FATAL_STATES or sqlstate.startswith(_FATAL_CLASSES):
        return ErrCode.FATAL_DB
    return ErrCode.DB_ERROR


def error_info(exc: BaseException, *, doing: str = "") -> ErrInfo:
    """The `ErrInfo` for an exception raised while talking to PostgreSQL.

    Args:
        exc: what asyncpg, the socket or the resources raised.
        doing: what the store was doing, for the message (e.g. ``upsert into public.chunks``).
    """
    prefix = f"{doing}: " if doing else ""
    name = type(exc).__name__
    if isinstance(exc, ResourceError):
        cause = exc.__cause__
        inner = error_info(cause) if cause is not None else ErrInfo(ErrCode.FATAL_DB, str(exc))
        return ErrInfo(inner.code, f"{prefix}{exc}", {**inner.meta, "exception": name})
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError | asyncpg.exceptions.OutdatedSchemaCacheError):
        # The schema changed under a prepared statement; asyncpg has dropped
        # the stale one, so the same call succeeds when tried again.
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}{exc}", {"exception": name})
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        hint = _hint(sqlstate)
        msg = f"{prefix}{exc} (SQLSTATE {sqlstate})" + (f"; {hint}" if hint else "")
        return ErrInfo(_code_of(sqlstate), msg, {"sqlstate": sqlstate, "exception": name})
    if isinstance(exc, TimeoutError):
        return ErrInfo(ErrCode.TIMEOUT, f"{prefix}timed out talking to PostgreSQL", {"exception": name})
    if isinstance(exc, OSError):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}connection to PostgreSQL lost: {exc}", {"exception": name})
    if _lost_connection(exc):
        return ErrInfo(ErrCode.TRANSIENT, f"{prefix}connection to PostgreSQL lost: {name}: {exc}", {"exception": name})
    return ErrInfo(ErrCode.DB_ERROR, f"{prefix}{name}: {exc}", {"exception": name})


# What asyncpg says when a connection closed under an operation, or when its
# protocol state was left behind by one that the server cut short.
# (A connection the server closed goes back to the pool at once, so its
# proxy then says it was released.)
_LOST_PHRASES = (
    "connection is closed",
    "connection was closed",
    "another operation is in progress",
    "released back to the pool",
)


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone or out of step (not the request)."""
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        return any(phrase in text for phrase in _LOST_PHRASES)
    return False


def _spoils_connection(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must be thrown away rather than reused.

    A server error with an ordinary SQLSTATE leaves the session usable (the
    transaction is rolled back); anything else (a lost socket, a protocol
    out of step, a cancelled operation) may leave it mid-protocol.
    """
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        # The server ends the session after these (shutdown, idle timeout).
        return sqlstate.startswith("57P") or sqlstate == "25P03"
    return True


@contextlib.asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection from ``pool``, terminated instead of reused if it raised a connection fault."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except BaseException as exc:
            if _spoils_connection(exc):
                # The pool sees it closed and opens a fresh one on the next
                # acquire. A connection already closed has gone back to the
                # pool by itself, and its proxy refuses every call.
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            raise


# -- the store ----------------------------------------------------------------------


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
        self._source_index_name = derived_name(config.table, "source_id")
        self._origin_index_name = derived_name(config.table, "origin_source_id")
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
        """Create the extension, schema, table and indexes that are missing; check the fingerprint."""

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
            "updated_at timestamptz NOT NULL DEFAULT now(), origin text NOT NULL DEFAULT '')"
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
        }
        if self._config.index == "hnsw":
            wanted[self._hnsw_index_name] = f"ON {self._table} USING hnsw (embedding vector_cosine_ops)"
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

    # -- reads --

    def query(
        self, vector: Embedding, top_k: int, filter: Mapping[str, object] | None = None
    ) -> AsyncPlan[list[QueryHit]]:
        """The ``top_k`` rows nearest ``vector`` by cosine distance, best first, ties by id.

        ``filter`` keeps rows whose meta contains it (jsonb ``@>``: equality
        for scalar values). With ``exact`` the index is bypassed, so results
        are exact and reproducible; otherwise HNSW answers, searching at least
        ``top_k`` candidates and scanning on while a filter rejects them.
        """
        values = [float(x) for x in vector]
        where = "WHERE meta @> $3::jsonb" if filter else ""
        sql = (
            f"SELECT id, source_id, text, meta, embedding <=> $1 AS distance FROM {self._table} {where} "
            "ORDER BY distance, id LIMIT $2"
        )
        args: list[Any] = [values, top_k]
        if filter:
            args.append(_meta_json(filter))

        async def body(pool: asyncpg.Pool) -> Result[list[QueryHit], ErrInfo]:
            async with _connection(pool) as conn, conn.transaction(readonly=True):
                if self._config.exact:
                    await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
                else:
                    ef = max(_DEFAULT_EF_SEARCH, min(_MAX_EF_SEARCH, top_k))
                    await conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                    if filter and await self._has_iterative_scan(conn):
                        # Without it, HNSW stops after ef_search candidates and a
                        # selective filter can leave fewer than top_k hits.
                        await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                rows = await conn.fetch(sql, *args)
            return Ok(
                [QueryHit(r["id"], r["source_id"], r["text"], _score(r["distance"]), _meta(r["meta"])) for r in rows]
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
