"""Fixtures of the adapter tests: the shared embedded PostgreSQL and resources bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from funcpipe.run.resources import RunResources
from tests.fakes import local_client
from tests.pg import resources_for, shared_dsn


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The DSN of the session's embedded PostgreSQL + pgvector server."""
    return shared_dsn()


@pytest.fixture
async def pg_resources(pg_dsn: str, tmp_path: Path) -> AsyncIterator[RunResources]:
    """Run resources whose embedded server is the session's; closed after the test."""
    async with resources_for(tmp_path) as resources:
        yield resources


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the local fake servers, closed after the test."""
    async with local_client() as c:
        yield c
