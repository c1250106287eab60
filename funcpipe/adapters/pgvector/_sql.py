"""SQL text and pgvector's binary wire codec: quoted and derived identifiers, vectors as float lists."""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Sequence

import asyncpg

_MAX_IDENT = 63


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
