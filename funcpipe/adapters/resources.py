"""`Resources`: what the runner lends adapters, opened lazily and closed by the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

from pydantic import SecretStr

from funcpipe.policy.clock import Clock

if TYPE_CHECKING:
    import asyncpg
    import httpx


ConnectionInit: TypeAlias = "Callable[[asyncpg.Connection], Awaitable[object]]"
"""What an adapter needs done on each new database connection ."""


class Resources(Protocol):
    """Shared clients, opened on first use and closed when the run ends.

    Attributes:
        state_dir: the run's ``.funcpipe/`` directory.
        clock: the run's clock.
    """

    state_dir: Path
    clock: Clock

    async def http_client(self) -> httpx.AsyncClient:
        """The run's shared HTTP client."""
        ...

    async def pg_pool(self, dsn: str | None, *, max_size: int = 4, init: ConnectionInit | None = None) -> asyncpg.Pool:
        """A pool for ``dsn``, one per DSN; ``None`` starts (or reuses) the embedded server.

        ``init`` runs on each new connection of the pool (the first request's wins).
        """
        ...

    def close_later(self, close: Callable[[], Awaitable[object]]) -> None:
        """Have ``close`` awaited when the run ends (a client an adapter opened itself)."""
        ...

    def secret(self, env_name: str) -> SecretStr:
        """The value of an environment variable, read now, as a `SecretStr`.

        Raises:
            funcpipe.errors.RunError: if the variable is unset, naming it (never a value).
        """
        ...
