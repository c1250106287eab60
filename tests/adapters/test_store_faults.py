"""Faults of the qdrant, chroma and lancedb stores are classified: each a real one.

A local HTTP server scripted with errors (500, 503, 401, 400, 429), a reset
connection or a 30 s silence, answering each store's server mode (in
Chroma's error shape for Chroma); a port nobody listens on; a LanceDB
directory that is a file; Qdrant's local storage held by another process.
The rest of the store contract is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from funcpipe.adapters.chroma import ChromaStore
from funcpipe.adapters.config import ChromaConfig, LanceDBConfig, QdrantConfig
from funcpipe.adapters.lancedb import LanceDBStore
from funcpipe.adapters.qdrant import QdrantStore
from funcpipe.core import Err, ErrCode
from funcpipe.ports import Fingerprint, VectorStorePort
from funcpipe.run.resources import RunResources
from tests.fakes import FakeServer, Fault, Reply

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)
EMBEDDED = ("qdrant", "chroma", "lancedb")

# -- servers that fail --------------------------------------------------------------------------------

CHROMA_ERRORS = {400: "InvalidArgumentError", 401: "AuthError", 403: "AuthorizationError", 429: "RateLimitError"}


class ChromaShapedServer(FakeServer):
    """Answers every request with the fault scripted, in the shape of a Chroma server's errors."""

    provider = "chroma"

    def error_reply(
        self,
        status: int,
        message: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> Reply:
        name = CHROMA_ERRORS.get(status, "InternalError" if status >= 500 else "ChromaError")
        return Reply(status, json.dumps({"error": name, "message": message or name}).encode(), dict(headers or {}))


def server_store(kind: str, url: str, resources: RunResources, timeout: float = 5) -> VectorStorePort:
    """A store of ``kind`` pointed at the server at ``url``."""
    if kind == "qdrant":
        return QdrantStore(QdrantConfig(url=url, request_timeout=timeout), resources)
    if kind == "chroma":
        return ChromaStore(ChromaConfig(url=url, request_timeout=timeout), resources)
    config = LanceDBConfig(
        uri="db://funcpipe-test", host_override=url, api_key_env="FUNCPIPE_TEST_LANCEDB_KEY", request_timeout=timeout
    )
    return LanceDBStore(config, resources)


FAULTS = {
    "500": (Fault.server_error(), ErrCode.TRANSIENT),
    "503": (Fault.server_error(503), ErrCode.TRANSIENT),
    "401": (Fault.auth(), ErrCode.AUTH),
    "400": (Fault.bad_request(), ErrCode.SERVICE_SPECIFIC),
    "429": (Fault.rate_limit(retry_after="1"), ErrCode.RATE_LIMIT),
    "reset": (Fault.reset(), ErrCode.TRANSIENT),
}


@pytest.fixture
def lancedb_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key the LanceDB server stores read (LanceDB Cloud requires one)."""
    monkeypatch.setenv("FUNCPIPE_TEST_LANCEDB_KEY", "ldb-test-key")
    return "ldb-test-key"


@pytest.mark.parametrize("kind", EMBEDDED)
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_server_fault_is_classified(tmp_path: Path, kind: str, fault: str, lancedb_key: str) -> None:
    injected, code = FAULTS[fault]
    server_type = ChromaShapedServer if kind == "chroma" else FakeServer
    with server_type(api_key=None) as server:
        server.script(*[injected] * 20)
        async with RunResources(tmp_path) as resources:
            res = await server_store(kind, server.url, resources).ensure(FP)()
    assert isinstance(res, Err)
    assert res.error.code == code, res.error


@pytest.mark.parametrize("kind", EMBEDDED)
async def test_a_server_that_does_not_answer_times_out(tmp_path: Path, kind: str, lancedb_key: str) -> None:
    server_type = ChromaShapedServer if kind == "chroma" else FakeServer
    with server_type(api_key=None) as server:
        server.script(*[Fault.slow(30)] * 5)
        async with RunResources(tmp_path) as resources:
            started = time.monotonic()
            res = await server_store(kind, server.url, resources, timeout=1).count()()
            waited = time.monotonic() - started
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.TIMEOUT, res.error
    assert waited < 20  # the store's request_timeout (1s), not the server's 30s, with room for a loaded machine


@pytest.fixture
def dead_url() -> Iterator[str]:
    """The URL of a port on 127.0.0.1 that nobody listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", EMBEDDED)
async def test_a_server_nobody_listens_on_is_transient(
    tmp_path: Path, kind: str, dead_url: str, lancedb_key: str
) -> None:
    async with RunResources(tmp_path) as resources:
        res = await server_store(kind, dead_url, resources).count()()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.TRANSIENT, res.error


async def test_a_lancedb_directory_that_is_a_file_is_fatal(tmp_path: Path) -> None:
    taken = tmp_path / "not-a-directory"
    taken.write_text("x", encoding="utf-8")
    async with RunResources(tmp_path) as resources:
        res = await LanceDBStore(LanceDBConfig(uri=str(taken / "db")), resources).ensure(FP)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.FATAL_DB, res.error


async def test_qdrant_local_storage_held_by_another_process_is_a_clear_db_error(tmp_path: Path) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from qdrant_client import QdrantClient; c = QdrantClient(path=sys.argv[1]); "
        "print('held', flush=True); sys.stdin.read()",
        str(tmp_path / "qdrant"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 60)).strip() == b"held"
        async with RunResources(tmp_path) as resources:
            res = await QdrantStore(QdrantConfig(), resources).ensure(FP)()
    finally:
        await asyncio.wait_for(holder.communicate(b""), 60)
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR
    assert "one process at a time" in res.error.msg
