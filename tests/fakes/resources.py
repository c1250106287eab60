"""`FakeResources`: the runner's `Resources` reduced to what HTTP adapters use, for tests."""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from funcpipe.errors import ResourceError
from funcpipe.policy.clock import REAL_CLOCK, Clock

_SSL = ssl.create_default_context()


def local_client(**kwargs: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` that reuses one SSL context: building one per client costs ~30 ms."""
    return httpx.AsyncClient(verify=_SSL, **kwargs)


class FakeResources:
    """Lends a real `httpx.AsyncClient` and reads secrets from ``env`` (``os.environ`` by default).

    Args:
        client: the client adapters get from `http_client`.
        env: where `secret` reads variables.
        state_dir: the run's state directory.
        clock: the run's clock.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        env: Mapping[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self._client = client
        self._env = env
        self.state_dir = state_dir or Path(".funcpipe")
        self.clock = clock
        self.secrets_read: list[str] = []
        self.to_close: list[Callable[[], Awaitable[object]]] = []

    async def http_client(self) -> httpx.AsyncClient:
        """The client given at construction."""
        return self._client

    async def pg_pool(self, dsn: str | None, *, max_size: int = 4, init: Any = None) -> Any:
        """No database here."""
        raise ResourceError("FakeResources has no database")

    def close_later(self, close: Callable[[], Awaitable[object]]) -> None:
        """Keep ``close`` in `to_close`; the test awaits it (or `aclose`) when it is done."""
        self.to_close.append(close)

    async def aclose(self) -> None:
        """Await what adapters asked to have closed, newest first."""
        while self.to_close:
            await self.to_close.pop()()

    def secret(self, env_name: str) -> SecretStr:
        """The variable's value, read now.

        Raises:
            ResourceError: the variable is unset, naming it.
        """
        env = os.environ if self._env is None else self._env
        self.secrets_read.append(env_name)
        if env_name not in env:
            raise ResourceError(f"environment variable {env_name} is not set")
        return SecretStr(env[env_name])
