"""Full-text search beside the vectors: the ``fts`` column, its upkeep, and BM25 ranking in SQL.

The column is ``tsvector GENERATED ALWAYS AS (to_tsvector('<language>', text))
STORED``: PostgreSQL keeps it in step with ``text`` on every write, and a GIN
index answers which rows hold a term. The language is a text search
configuration: ``english`` stems and drops stop words (prose), ``simple``
only lower-cases (code, identifiers, mixed languages).

Keyword queries rank by Okapi BM25, computed in one statement: the
question's lexemes (``to_tsvector`` of its text, so any text is safe: no
query syntax is parsed), their document frequencies (one GIN lookup each),
the rows holding any of them, and each such row's term frequencies. A
document's length is its number of distinct lexemes, as in the memory store.
The statistics are materialised once per query: inlined, the planner could
recount them for every candidate row.
"""

from __future__ import annotations

import re

import asyncpg

from funcpipe.adapters._retrieval import BM25_B, BM25_K1
from funcpipe.core import ErrCode, ErrInfo

COLUMN = "fts"

_EXPRESSION = re.compile(r"to_tsvector\('([^']+)'::regconfig")


def column_sql(language: str) -> str:
    """The column's definition; ``language`` is a plain identifier (the config model checks it)."""
    return f"{COLUMN} tsvector GENERATED ALWAYS AS (to_tsvector('{language}'::regconfig, text)) STORED"


async def ensure_column(
    conn: asyncpg.Connection, schema: str, table: str, quoted: str, language: str
) -> ErrInfo | None:
    """Add the column to a table made before it existed, or check its language; None when all is well.

    Adding it computes it for every row already stored (one table rewrite).
    """
    expression = await conn.fetchval(
        "SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
        schema,
        table,
        COLUMN,
    )
    if expression is None:
        await conn.execute(f"ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS {column_sql(language)}")
        return None
    match = _EXPRESSION.search(str(expression))
    built = match.group(1) if match else None
    if built == language:
        return None
    return ErrInfo(
        ErrCode.SERVICE_SPECIFIC,
        f"table {schema}.{table}'s full-text column was built with text search configuration {built!r}, "
        f"but the store is configured with language {language!r}. Fix: set `language: {built}` on the store, "
        f"or drop the column to rebuild it (ALTER TABLE {schema}.{table} DROP COLUMN {COLUMN})",
        {"table": f"{schema}.{table}", "stored": built, "configured": language},
    )


def keyword_sql(table: str, *, filtered: bool) -> str:
    """The BM25 query: ``$1`` language, ``$2`` the question, ``$3`` the limit, ``$4`` the meta filter.

    Rows come out best first, ties by id, as ``id, source_id, text, meta, score``.
    """
    only = "AND t.meta @> $4::jsonb" if filtered else ""
    return f"""
WITH terms AS MATERIALIZED (
    -- Each lexeme as a tsquery of its own: quoted, its quotes and backslashes doubled.
    SELECT DISTINCT u.lexeme,
        ('''' || replace(replace(u.lexeme, '\\', '\\\\'), '''', '''''') || '''')::tsquery AS tq
    FROM unnest(to_tsvector($1::regconfig, $2::text)) AS u
), stats AS MATERIALIZED (
    SELECT count(*)::float8 AS n, coalesce(avg(length({COLUMN})), 0)::float8 AS avgdl FROM {table}
), df AS MATERIALIZED (
    SELECT terms.lexeme, (SELECT count(*) FROM {table} WHERE {COLUMN} @@ terms.tq)::float8 AS df FROM terms
), candidates AS (
    SELECT t.id, t.{COLUMN} FROM {table} t
    WHERE t.{COLUMN} @@ (SELECT string_agg(tq::text, ' | ')::tsquery FROM terms) {only}
), scored AS (
    SELECT c.id, sum(
        ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5))
        * tf.n * ({BM25_K1} + 1)
        / (tf.n + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * length(c.{COLUMN}) / greatest(s.avgdl, 1e-9)))
    ) AS score
    FROM candidates c
    CROSS JOIN stats s
    CROSS JOIN LATERAL (
        SELECT u.lexeme, coalesce(array_length(u.positions, 1), 1)::float8 AS n FROM unnest(c.{COLUMN}) AS u
    ) tf
    JOIN df d ON d.lexeme = tf.lexeme
    GROUP BY c.id
)
SELECT t.id, t.source_id, t.text, t.meta, scored.score
FROM scored JOIN {table} t ON t.id = scored.id
ORDER BY scored.score DESC, t.id
LIMIT $3
"""
