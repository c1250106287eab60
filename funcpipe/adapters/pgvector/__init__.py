"""The ``pgvector`` vector store: PostgreSQL with the pgvector extension, on asyncpg.

With no ``dsn`` the store uses the embedded server the run's resources start
under ``.funcpipe/pgdata``; with one, any PostgreSQL where pgvector is
installed (in a schema on the search path). One table holds the chunks::

    id text PRIMARY KEY, source_id text, text text, meta jsonb,
    embedding vector(dim), updated_at timestamptz, origin text,
    fts tsvector GENERATED ALWAYS AS (to_tsvector(language, text)) STORED

``origin`` names the pipeline and source stage that wrote a row, so source
sync (`prune`) deletes only its own rows; tables made before it existed get
the column (``''`` for old rows) from `ensure`. ``fts`` (with a GIN index)
serves keyword and hybrid queries; `ensure` adds it to older tables too.

Its comment records the embedder's fingerprint; writing with another
embedder is refused with both fingerprints named. An upsert is a binary COPY
into a session-temporary table, then one ``INSERT ... ON CONFLICT (id) DO
UPDATE``, in one transaction; rows whose content did not change are not
rewritten. Names are validated by the config and always quoted here.

Failures are `ErrInfo` values, never exceptions, coded from the SQLSTATE,
or for client-side errors from what asyncpg raised:

    08xxx, 40xxx, 57P01-57P03, 53300, 55P03, 25P03   TRANSIENT   (lost connection, conflict, restart)
    OSError from the socket (reset, refused, gone)   TRANSIENT   (server down or restarting)
    InterfaceError: connection closed, or another    TRANSIENT   (a connection the server dropped
      operation in progress; InternalClientError                  mid-operation: its protocol state
      (protocol state desynchronised)                             is lost)
    stale prepared statement or schema cache         TRANSIENT
    57014 (statement_timeout), client timeouts       TIMEOUT
    28xxx, 3D000, 42501, 0A000, 58xxx, 53100, XX     FATAL_DB    (retrying cannot help)
    anything else                                    DB_ERROR

08xxx covers asyncpg's ConnectionDoesNotExistError; 57P01 is AdminShutdown
(``pg_terminate_backend``, a fast shutdown), 57P02 CrashShutdown, 57P03
CannotConnectNowError (starting up or shutting down). A connection that
raised anything but an ordinary server error (one that leaves the session
usable, such as a constraint violation) is terminated, not returned to the
pool, so a retry never meets the same broken connection; the pool opens a
fresh one.
"""

from __future__ import annotations

from funcpipe.adapters.pgvector._errors import error_info
from funcpipe.adapters.pgvector._sql import (
    decode_vector,
    derived_name,
    encode_vector,
    quote_ident,
    register_vector_codec,
)
from funcpipe.adapters.pgvector._store import PgvectorStore, create

__all__ = [
    "PgvectorStore",
    "create",
    "decode_vector",
    "derived_name",
    "encode_vector",
    "error_info",
    "quote_ident",
    "register_vector_codec",
]
