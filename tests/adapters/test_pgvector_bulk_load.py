"""The pgvector index after the bulk load: an empty table is loaded without its HNSW index, built once at the end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

import funcpipe
from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.pgvector import PgvectorStore, derived_name
from funcpipe.core import Ok
from funcpipe.ports import BulkLoadStore, Fingerprint, VectorRecord
from funcpipe.run.resources import RunResources
from tests.pg import unique_name

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)


async def _has_hnsw(dsn: str, table: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexname = $2)",
                table,
                derived_name(table, "embedding_hnsw"),
            )
        )
    finally:
        await conn.close()


def _records(n: int, origin: str = "") -> list[VectorRecord]:
    return [VectorRecord(f"r{i}", f"s{i % 3}", f"t{i}", [1.0, float(i), 0.5], {}, origin) for i in range(n)]


async def test_an_empty_table_is_loaded_first_and_indexed_at_the_end(pg_resources: RunResources, pg_dsn: str) -> None:
    table = unique_name()
    s = PgvectorStore(PgvectorConfig(table=table), pg_resources)
    assert isinstance(s, BulkLoadStore)
    assert await s.ensure(FP)() == Ok(None)
    assert not await _has_hnsw(pg_dsn, table)
    assert await s.upsert(_records(20))() == Ok(20)
    before = await s.query([1.0, 3.0, 0.5], 3)()  # queries work before the index exists

    assert await s.finish_load()() == Ok(True)
    assert await _has_hnsw(pg_dsn, table)
    after = await s.query([1.0, 3.0, 0.5], 3)()
    assert isinstance(before, Ok) and isinstance(after, Ok)
    assert [h.id for h in before.value] == [h.id for h in after.value]


async def test_a_table_with_rows_gets_its_index_at_ensure(pg_resources: RunResources, pg_dsn: str) -> None:
    # A load cut short (a crash before the end) is indexed by the next run's ensure, before it writes.
    table = unique_name()
    first = PgvectorStore(PgvectorConfig(table=table), pg_resources)
    assert await first.ensure(FP)() == Ok(None)
    assert await first.upsert(_records(5))() == Ok(5)

    again = PgvectorStore(PgvectorConfig(table=table), pg_resources)
    assert await again.ensure(FP)() == Ok(None)
    assert await _has_hnsw(pg_dsn, table)
    assert await again.finish_load()() == Ok(False)


async def test_finish_load_does_nothing_without_a_table_or_with_index_none(
    pg_resources: RunResources, pg_dsn: str
) -> None:
    missing = PgvectorStore(PgvectorConfig(table=unique_name()), pg_resources)
    assert await missing.finish_load()() == Ok(False)
    table = unique_name()
    none = PgvectorStore(PgvectorConfig(table=table, index="none"), pg_resources)
    assert await none.ensure(FP)() == Ok(None)
    assert await none.upsert(_records(3))() == Ok(3)
    assert await none.finish_load()() == Ok(False)
    assert not await _has_hnsw(pg_dsn, table)


# -- through the runner --------------------------------------------------------------------


def _spec(tmp_path: Path, dsn: str, table: str, on_error: str = "continue") -> Path:
    docs = [{"id": f"d{i}", "text": f"document {i} about topic {i % 4}"} for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""\
version: 1
name: bulk
adapters:
  e: {{kind: hashing, dim: 16}}
  s: {{kind: pgvector, table: {table}, dsn: "{dsn}"}}
stages:
  - {{id: load, use: source.jsonl, with: {{path: in.jsonl, id_field: id, text_field: text}}}}
  - {{id: embed, use: embed, adapter: e}}
  - {{id: store, use: vector.upsert, adapter: s, batch: {{size: 8}}}}
on_error: {{mode: {on_error}}}
"""
    )
    return spec


@pytest.mark.parametrize("rerun", [False, True])
def test_every_run_ends_with_the_index_present(tmp_path: Path, pg_dsn: str, rerun: bool) -> None:
    table = unique_name()
    spec = _spec(tmp_path, pg_dsn, table)
    report = funcpipe.load(spec).run()
    assert (report.exit_code, report.accounting["done"]) == (0, 30)
    if rerun:  # nothing to do: the index is still there, nothing is built twice
        report = funcpipe.load(spec).run()
        assert (report.exit_code, report.accounting["skipped"]) == (0, 30)

    assert asyncio.run(_has_hnsw(pg_dsn, table))


def test_a_run_stopped_early_builds_no_index_and_the_next_run_does(tmp_path: Path, pg_dsn: str) -> None:
    table = unique_name()
    spec = _spec(tmp_path, pg_dsn, table, on_error="fail_fast")
    lines = (tmp_path / "in.jsonl").read_text().splitlines()
    lines[20] = '{"id": "bad", "text": 5}'  # not a text: the item fails, and fail_fast stops the run
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")

    stopped = funcpipe.load(spec).run()
    assert stopped.exit_code == 1
    assert not asyncio.run(_has_hnsw(pg_dsn, table))

    lines[20] = '{"id": "d20", "text": "document 20 again"}'
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    again = funcpipe.load(spec).run()
    assert again.exit_code == 0
    assert asyncio.run(_has_hnsw(pg_dsn, table))
