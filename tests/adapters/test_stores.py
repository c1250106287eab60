"""What memory and pgvector share beyond the store contract (tests/adapters/test_store_contract.py).

Both match a filter by jsonb containment (lists and objects too), rank
zero-vector rows last as pgvector's NaN distance does, and give the same
answers to the same calls. pgvector runs with ``exact: true``; each test
gets a fresh table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.core import Ok
from funcpipe.run.resources import RunResources
from tests.adapters._stores import FP, StoreFactory, hits, ok, ready, rec, tie_groups
from tests.pg import resources_for, unique_name


@pytest.fixture(params=["memory", "pgvector"])
def new_store(request: pytest.FixtureRequest, pg_resources: RunResources) -> StoreFactory:
    """Makes an empty store of the parametrised kind (a fresh table for pgvector)."""
    if request.param == "memory":
        return MemoryStore
    return lambda: PgvectorStore(PgvectorConfig(table=unique_name(), exact=True), pg_resources)


async def test_query_filter_contains_nested_values(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], tags=["x", "y"], doc={"lang": "en", "v": 2}), rec("b", [1, 0, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0], tags=["y"])] == ["a"]
    assert [h.id for h in await hits(store, [1, 0, 0], doc={"lang": "en"})] == ["a"]


async def test_zero_vector_rows_rank_last(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [0, 0, 0]), rec("b", [-1, 0, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0])] == ["b", "a"]


# -- both stores agree -----------------------------------------------------------

VECTORS = st.lists(st.integers(-3, 3), min_size=3, max_size=3)
RECORDS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), VECTORS, st.sampled_from(["s1", "s2"]), st.sampled_from(["en", "fr"])),
    max_size=12,
)


@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS, query=VECTORS, k=st.integers(1, 6), lang=st.sampled_from([None, "en"]))
async def test_memory_and_pgvector_answer_alike(
    tmp_path: Path, records: list[tuple[str, list[int], str, str]], query: list[int], k: int, lang: str | None
) -> None:
    async with resources_for(tmp_path) as resources:
        answers = []
        for store in (MemoryStore(), PgvectorStore(PgvectorConfig(table=unique_name(), exact=True), resources)):
            assert await store.ensure(FP)() == Ok(None)
            batch = [rec(rid, vec, source, lang=lg) for rid, vec, source, lg in records]
            written = ok(await store.upsert(batch)())
            deleted = ok(await store.delete_stale("s2", ["a", "b"])())
            pruned = ok(await store.prune("p/load", ["s1"], ["c", "d"])())
            sources = ok(await store.source_ids("p/load")())
            flt = {"lang": lang} if lang else {}
            answers.append((written, deleted, pruned, sources, tie_groups(await hits(store, query, k, **flt), k)))
        assert answers[0] == answers[1]
