"""PostgreSQL failures as `ErrInfo` values, and connections that are thrown away when they break.

The codes are listed in the docstring of `funcpipe.adapters.pgvector`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.errors import ResourceError

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
