"""Tests of funcpipe.adapters.pgvector beyond the store contract (tests/adapters/test_store_contract.py)."""

from __future__ import annotations

import asyncio
import json
import random

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.pgvector import (
    PgvectorStore,
    create,
    decode_vector,
    derived_name,
    encode_vector,
    error_info,
    quote_ident,
    register_vector_codec,
)
from funcpipe.adapters.pgvector._errors import _connection
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import ResourceError
from funcpipe.policy.apply import apply_policy
from funcpipe.policy.models import Backoff, Policy, Retry
from funcpipe.ports import Fingerprint, VectorRecord, VectorStorePort
from funcpipe.run.resources import RunResources
from tests.pg import unique_name

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)


def store(resources: RunResources, **config: object) -> PgvectorStore:
    return PgvectorStore(PgvectorConfig.model_validate({"table": unique_name(), **config}), resources)


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "funcpipe-test"})


# -- names -------------------------------------------------------------------------


def test_quote_ident_wraps_and_doubles_quotes() -> None:
    assert quote_ident("chunks") == '"chunks"'
    assert quote_ident('a"b') == '"a""b"'


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 64])
def test_quote_ident_rejects_what_cannot_be_an_identifier(bad: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        quote_ident(bad)


@pytest.mark.parametrize("attack", ["chunks; drop table x", 'chunks"; DROP TABLE x; --', "x y", "1abc", "a" * 64])
def test_config_rejects_an_injection_attempt_in_the_table_name(attack: str) -> None:
    with pytest.raises(ValidationError, match="not a plain SQL identifier"):
        PgvectorConfig(table=attack)


def test_config_rejects_an_injection_attempt_in_the_schema_name() -> None:
    with pytest.raises(ValidationError, match="not a plain SQL identifier"):
        PgvectorConfig.model_validate({"schema": "public; drop schema public cascade"})


async def test_quoting_keeps_a_hostile_name_inert(pg_dsn: str) -> None:
    victim = unique_name("v")[:12]
    hostile = f'{victim}"; DROP TABLE {victim}; --'
    conn = await connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {quote_ident(victim)} (x int)")
        await conn.execute(f"CREATE TABLE {quote_ident(hostile)} (x int)")
        found = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = ANY($1::text[])", [victim, hostile])
        assert found == 2
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {quote_ident(hostile)}, {quote_ident(victim)}")
        await conn.close()


async def test_mixed_case_names_are_kept_exactly(pg_resources: RunResources, pg_dsn: str) -> None:
    table, schema = "Chunks_" + unique_name(), "Schema_" + unique_name()
    s = PgvectorStore(PgvectorConfig.model_validate({"table": table, "schema": schema}), pg_resources)
    assert await s.ensure(FP)() == Ok(None)
    conn = await connect(pg_dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname = $2",
            schema,
            table,
        )
        assert found == 1
    finally:
        await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
        await conn.close()


def test_derived_names_fit_63_bytes_and_stay_distinct() -> None:
    a, b = "a" * 60 + "x", "a" * 60 + "y"
    assert derived_name("chunks", "source_id") == "chunks_source_id"
    assert len(derived_name(a, "embedding_hnsw")) <= 63
    assert derived_name(a, "embedding_hnsw") != derived_name(b, "embedding_hnsw")


# -- the vector codec ------------------------------------------------------------------

FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, derandomize=True)
@given(st.lists(FLOAT32, max_size=64))
def test_vector_codec_round_trips_float32_values(values: list[float]) -> None:
    assert decode_vector(encode_vector(values)) == values


def test_vector_wire_format_is_pgvectors() -> None:
    assert encode_vector([1.0, -2.0]) == b"\x00\x02\x00\x00" + b"\x3f\x80\x00\x00" + b"\xc0\x00\x00\x00"


async def test_pool_connections_exchange_vectors_as_lists(pg_resources: RunResources) -> None:
    assert await store(pg_resources).ensure(FP)() == Ok(None)
    pool = await pg_resources.pg_pool(None)
    assert await pool.fetchval("SELECT $1::vector", [1.5, 2.0]) == [1.5, 2.0]


async def test_codec_is_not_registered_where_pgvector_is_missing(pg_dsn: str) -> None:
    db = unique_name("db")
    admin = await connect(pg_dsn)
    await admin.execute(f"CREATE DATABASE {quote_ident(db)}")
    try:
        conn = await asyncpg.connect(pg_dsn.replace("/postgres?", f"/{db}?"))
        try:
            assert await register_vector_codec(conn) is False
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {quote_ident(db)}")
        await admin.close()


# -- ensure ---------------------------------------------------------------------------


async def _indexes(dsn: str, table: str) -> dict[str, str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table)
        return {r["indexname"]: r["indexdef"] for r in rows}
    finally:
        await conn.close()


async def test_create_gives_a_vector_store_port(pg_resources: RunResources) -> None:
    assert isinstance(create(PgvectorConfig(), pg_resources), VectorStorePort)


async def test_ensure_and_finish_load_create_an_hnsw_cosine_index_once(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources)
    assert await s.ensure(FP)() == Ok(None)
    assert await s.ensure(FP)() == Ok(None)
    assert await s.finish_load()() == Ok(True)
    assert await s.finish_load()() == Ok(False)
    table = s.name.split(".")[1]
    hnsw = [d for d in (await _indexes(pg_dsn, table)).values() if "hnsw" in d]
    assert len(hnsw) == 1
    assert "vector_cosine_ops" in hnsw[0]


async def test_ensure_without_index_creates_no_hnsw(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources, index="none")
    assert await s.ensure(FP)() == Ok(None)
    assert not [d for d in (await _indexes(pg_dsn, s.name.split(".")[1])).values() if "hnsw" in d]


async def test_ensure_records_the_fingerprint_in_the_table_comment(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources)
    await s.ensure(FP)()
    conn = await connect(pg_dsn)
    try:
        comment = await conn.fetchval("SELECT obj_description($1::regclass, 'pg_class')", s.name)
    finally:
        await conn.close()
    assert json.loads(comment) == {"funcpipe_embedder": {"kind": "hashing", "model": "v1-c3-5-w2", "dim": 3}}


async def test_concurrent_ensures_all_succeed(pg_resources: RunResources, pg_dsn: str) -> None:
    table = unique_name()
    stores = [PgvectorStore(PgvectorConfig(table=table), pg_resources) for _ in range(4)]
    results = await asyncio.gather(*(s.ensure(FP)() for s in stores))
    assert results == [Ok(None)] * 4
    # primary key, source_id, (origin, source_id), fts gin; hnsw waits for the end of the load
    assert len(await _indexes(pg_dsn, table)) == 4
    built = await asyncio.gather(*(s.finish_load()() for s in stores))
    assert sorted(r.value for r in built if isinstance(r, Ok)) == [False, False, False, True]  # one builds it
    assert len(await _indexes(pg_dsn, table)) == 5


async def test_a_table_funcpipe_did_not_create_is_refused(pg_resources: RunResources, pg_dsn: str) -> None:
    table = unique_name()
    conn = await connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {quote_ident(table)} (id text primary key)")
    finally:
        await conn.close()
    res = await PgvectorStore(PgvectorConfig(table=table), pg_resources).ensure(FP)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert "records no embedder fingerprint" in res.error.msg


async def test_ensure_adds_the_origin_column_to_a_table_made_before_it(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources)
    table = s.name.split(".")[1]
    assert await s.ensure(FP)() == Ok(None)
    assert await s.upsert([VectorRecord("old", "A", "t", [1.0, 0.0, 0.0])])() == Ok(1)
    conn = await connect(pg_dsn)
    try:
        await conn.execute(f"DROP INDEX {quote_ident(derived_name(table, 'origin_source_id'))}")
        await conn.execute(f"ALTER TABLE {quote_ident(table)} DROP COLUMN origin")
    finally:
        await conn.close()
    again = PgvectorStore(PgvectorConfig(table=table), pg_resources)
    assert await again.ensure(FP)() == Ok(None)
    assert await again.source_ids("")() == Ok(["A"])
    assert await again.prune("p/load", ["A"])() == Ok(0)  # rows of no origin are never synced away
    assert await again.upsert([VectorRecord("new", "B", "t", [0.0, 1.0, 0.0], {}, "p/load")])() == Ok(1)
    assert await again.source_ids("p/load")() == Ok(["B"])
    assert len(await _indexes(pg_dsn, table)) == 5


# -- queries ---------------------------------------------------------------------------


async def test_approximate_filtered_query_still_fills_top_k(pg_resources: RunResources) -> None:
    rnd = random.Random(7)
    fp = Fingerprint("test", "gauss", 16)
    s = store(pg_resources)
    assert await s.ensure(fp)() == Ok(None)
    records = [
        VectorRecord(str(i), "s", "t", [rnd.gauss(0, 1) for _ in range(16)], {"group": i % 100}) for i in range(2000)
    ]
    assert await s.upsert(records)() == Ok(2000)
    res = await s.query([rnd.gauss(0, 1) for _ in range(16)], 10, {"group": 42})()
    assert isinstance(res, Ok)
    assert len(res.value) == 10
    assert {h.meta["group"] for h in res.value} == {42}


async def test_query_of_a_missing_table_says_to_ingest_first(pg_resources: RunResources) -> None:
    res = await store(pg_resources).query([1.0, 0.0, 0.0], 3)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR
    assert res.error.meta["sqlstate"] == "42P01"
    assert "run the ingest pipeline first" in res.error.msg


# -- errors ------------------------------------------------------------------------------

EXC = asyncpg.exceptions


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (EXC.AdminShutdownError("terminating connection"), ErrCode.TRANSIENT),
        (EXC.CrashShutdownError("crash"), ErrCode.TRANSIENT),
        (EXC.CannotConnectNowError("starting up"), ErrCode.TRANSIENT),
        (EXC.TooManyConnectionsError("too many"), ErrCode.TRANSIENT),
        (EXC.ConnectionDoesNotExistError("closed mid-operation"), ErrCode.TRANSIENT),
        (EXC.ConnectionFailureError("failure"), ErrCode.TRANSIENT),
        (EXC.SerializationError("could not serialize"), ErrCode.TRANSIENT),
        (EXC.DeadlockDetectedError("deadlock"), ErrCode.TRANSIENT),
        (EXC.LockNotAvailableError("lock timeout"), ErrCode.TRANSIENT),
        (EXC.InvalidCachedStatementError("cached plan must not change result type"), ErrCode.TRANSIENT),
        (EXC.QueryCanceledError("statement timeout"), ErrCode.TIMEOUT),
        (EXC.InvalidPasswordError("password authentication failed"), ErrCode.FATAL_DB),
        (EXC.InvalidAuthorizationSpecificationError("no such role"), ErrCode.FATAL_DB),
        (EXC.InvalidCatalogNameError("database does not exist"), ErrCode.FATAL_DB),
        (EXC.InsufficientPrivilegeError("permission denied"), ErrCode.FATAL_DB),
        (EXC.FeatureNotSupportedError('extension "vector" is not available'), ErrCode.FATAL_DB),
        (EXC.UndefinedFileError("could not open extension control file"), ErrCode.FATAL_DB),
        (EXC.DiskFullError("no space left"), ErrCode.FATAL_DB),
        (EXC.InternalServerError("internal"), ErrCode.FATAL_DB),
        (EXC.UniqueViolationError("duplicate key"), ErrCode.DB_ERROR),
        (EXC.UndefinedTableError("relation does not exist"), ErrCode.DB_ERROR),
        (EXC.DataError("expected 3 dimensions, not 2"), ErrCode.DB_ERROR),
        (EXC.PostgresSyntaxError("syntax error"), ErrCode.DB_ERROR),
        (ConnectionResetError("reset by peer"), ErrCode.TRANSIENT),
        (ConnectionRefusedError("refused"), ErrCode.TRANSIENT),
        (TimeoutError(), ErrCode.TIMEOUT),
        (asyncpg.InterfaceError("cannot perform operation: connection is closed"), ErrCode.TRANSIENT),
        (asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released"), ErrCode.DB_ERROR),
        (EXC._base.DataError("invalid input for query argument $1"), ErrCode.DB_ERROR),
        # a connection the server dropped mid-operation, met again by the next call
        (EXC.InternalClientError("cannot switch to state 15; another operation (2) is in progress"), ErrCode.TRANSIENT),
        (EXC.ProtocolError("unexpected message"), ErrCode.TRANSIENT),
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), ErrCode.TRANSIENT),
        (
            asyncpg.InterfaceError("cannot call Connection.execute(): connection has been released back to the pool"),
            ErrCode.TRANSIENT,
        ),
        (FileNotFoundError(2, "No such file or directory"), ErrCode.TRANSIENT),  # the socket, mid-restart
        (asyncpg.InterfaceError("pool is closing"), ErrCode.DB_ERROR),
    ],
)
def test_error_info_codes_by_sqlstate_and_kind(exc: BaseException, code: str) -> None:
    assert error_info(exc).code == code


def test_error_info_carries_the_sqlstate_and_a_hint() -> None:
    info = error_info(EXC.InvalidPasswordError("password authentication failed"), doing="ensure public.chunks")
    assert info.meta["sqlstate"] == "28P01"
    assert info.msg.startswith("ensure public.chunks: password authentication failed (SQLSTATE 28P01)")
    assert "check the user and password" in info.msg


def test_error_info_classifies_a_resource_error_by_its_cause() -> None:
    for cause, code in ((ConnectionRefusedError("refused"), ErrCode.TRANSIENT), (RuntimeError("x"), ErrCode.DB_ERROR)):
        try:
            raise ResourceError("could not connect to PostgreSQL at postgresql://u:***@h/db") from cause
        except ResourceError as exc:
            info = error_info(exc)
        assert info.code == code
        assert info.msg.startswith("could not connect to PostgreSQL")


def test_error_info_of_a_resource_error_without_cause_is_fatal() -> None:
    assert error_info(ResourceError("could not start the embedded server")).code == ErrCode.FATAL_DB


async def test_wrong_dimension_from_the_server_is_a_db_error(pg_resources: RunResources) -> None:
    s = store(pg_resources)
    await s.ensure(FP)()
    res = await s.upsert([VectorRecord("a", "s", "t", [1.0, 2.0])])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR
    assert "expected 3 dimensions, not 2" in res.error.msg


async def _blocked_backend(watcher: asyncpg.Connection) -> int:
    """The pid of the funcpipe backend waiting on a lock, once there is one.

    ``watcher`` must not be inside a transaction: pg_stat_activity is read
    once per transaction, so a poll inside one would never see a change.
    """
    for _ in range(1000):
        pid = await watcher.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'funcpipe' AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("the upsert never blocked on the lock")


async def _kill_first_attempt(dsn: str, s: PgvectorStore, plan: AsyncPlan[int]) -> Result[int, ErrInfo]:
    """Run ``plan`` while its first upsert is blocked on a table lock, and kill that backend."""
    locker, watcher = await connect(dsn), await connect(dsn)
    try:
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {s.name} IN EXCLUSIVE MODE")
            running = asyncio.create_task(plan())
            victim = await _blocked_backend(watcher)
            assert await watcher.fetchval("SELECT pg_terminate_backend($1, 10000)", victim)
        return await running
    finally:
        await locker.close()
        await watcher.close()


RECORDS = [VectorRecord(str(i), "s", f"text {i}", [1.0, float(i), 0.0]) for i in range(50)]


async def test_a_connection_killed_mid_upsert_is_transient(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources)
    await s.ensure(FP)()
    res = await _kill_first_attempt(pg_dsn, s, s.upsert(RECORDS))
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.TRANSIENT
    assert await s.count()() == Ok(0)


async def test_a_retried_upsert_completes_after_the_kill(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources)
    await s.ensure(FP)()
    policy = Policy(retry=Retry(max_attempts=3, backoff=Backoff(kind="immediate")))
    assert await _kill_first_attempt(pg_dsn, s, apply_policy(policy, s.upsert(RECORDS))) == Ok(50)
    assert await s.count()() == Ok(50)


async def _backend(pool: asyncpg.Pool) -> int:
    async with _connection(pool) as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


@pytest.mark.parametrize(
    "fault",
    [
        EXC.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        ConnectionResetError("reset by peer"),
        EXC.AdminShutdownError("terminating connection due to administrator command"),
    ],
)
async def test_a_connection_that_raised_a_connection_fault_is_not_reused(
    pg_resources: RunResources, fault: BaseException
) -> None:
    pool = await pg_resources.pg_pool(None)
    before = await _backend(pool)
    with pytest.raises(type(fault)):
        async with _connection(pool) as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == before
            raise fault
    assert await _backend(pool) != before


async def test_a_connection_whose_statement_failed_is_reused(pg_resources: RunResources) -> None:
    pool = await pg_resources.pg_pool(None)
    before = await _backend(pool)
    with pytest.raises(EXC.UndefinedTableError):
        async with _connection(pool) as conn:
            await conn.execute("SELECT * FROM no_such_table_here")
    assert await _backend(pool) == before


async def test_after_a_kill_the_next_call_succeeds_at_once(pg_resources: RunResources, pg_dsn: str) -> None:
    s = store(pg_resources, pool_max=1)
    await s.ensure(FP)()
    res = await _kill_first_attempt(pg_dsn, s, s.upsert(RECORDS))
    assert isinstance(res, Err) and res.error.code == ErrCode.TRANSIENT
    assert await s.upsert(RECORDS)() == Ok(50)
