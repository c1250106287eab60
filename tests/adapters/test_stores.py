"""The `VectorStorePort` contract, run against ``memory`` and ``pgvector`` (a real embedded server).

pgvector runs with ``exact: true`` so that both stores must give the same
answers to the same calls; each test gets a fresh table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.core import Err, ErrCode, Ok, Result
from funcpipe.ports import Fingerprint, QueryHit, VectorRecord, VectorStorePort
from funcpipe.run.resources import RunResources
from tests.pg import resources_for, unique_name

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)
OTHER_FP = Fingerprint("openai", "text-embedding-3-small", 3)

StoreFactory = Callable[[], VectorStorePort]


@pytest.fixture(params=["memory", "pgvector"])
def new_store(request: pytest.FixtureRequest, pg_resources: RunResources) -> StoreFactory:
    """Makes an empty store of the parametrised kind (a fresh table for pgvector)."""
    if request.param == "memory":
        return MemoryStore
    return lambda: PgvectorStore(PgvectorConfig(table=unique_name(), exact=True), pg_resources)


async def ready(new_store: StoreFactory, fingerprint: Fingerprint = FP) -> VectorStorePort:
    store = new_store()
    assert await store.ensure(fingerprint)() == Ok(None)
    return store


def rec(
    rid: str, vec: Sequence[float], source: str = "s1", text: str | None = None, origin: str = "p/load", **meta: object
) -> VectorRecord:
    return VectorRecord(rid, source, text if text is not None else f"text of {rid}", list(vec), meta, origin)


def ok(res: Result[object, object]) -> object:
    assert isinstance(res, Ok), res
    return res.value


async def hits(store: VectorStorePort, vec: Sequence[float], k: int = 10, **flt: object) -> list[QueryHit]:
    value = ok(await store.query(list(vec), k, flt or None)())
    assert isinstance(value, list)
    return value


# -- ensure --------------------------------------------------------------------


async def test_ensure_is_idempotent(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert await store.ensure(FP)() == Ok(None)


async def test_ensure_with_another_fingerprint_names_both(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.ensure(OTHER_FP)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert str(FP) in res.error.msg
    assert str(OTHER_FP) in res.error.msg
    assert res.error.meta["stored"] == str(FP)
    assert res.error.meta["configured"] == str(OTHER_FP)


async def test_calls_before_ensure_are_db_errors(new_store: StoreFactory) -> None:
    store = new_store()
    for plan in (store.upsert([rec("a", [1, 0, 0])]), store.count(), store.query([1, 0, 0], 3)):
        res = await plan()
        assert isinstance(res, Err)
        assert res.error.code == ErrCode.DB_ERROR
        assert "run the ingest pipeline first" in res.error.msg


# -- writes --------------------------------------------------------------------


async def test_upsert_writes_and_counts(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([rec("a", [1, 0, 0]), rec("b", [0, 1, 0])])()) == 2
    assert ok(await store.count()()) == 2


async def test_upsert_of_an_empty_batch_writes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([])()) == 0


async def test_upsert_again_is_idempotent(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    batch = [rec("a", [1, 0, 0], tag="x"), rec("b", [0, 1, 0])]
    await store.upsert(batch)()
    assert ok(await store.upsert(batch)()) == 0
    assert ok(await store.count()()) == 2


async def test_upsert_replaces_changed_rows(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], text="old"), rec("b", [0, 1, 0])])()
    assert ok(await store.upsert([rec("a", [1, 0, 0], text="new"), rec("b", [0, 1, 0])])()) == 1
    [top, *_] = await hits(store, [1, 0, 0])
    assert (top.id, top.text) == ("a", "new")


async def test_upsert_keeps_the_last_of_duplicate_ids(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([rec("a", [1, 0, 0], text="first"), rec("a", [1, 0, 0], text="last")])()) == 1
    [hit] = await hits(store, [1, 0, 0])
    assert hit.text == "last"


async def test_upsert_with_a_wrong_dimension_fails_and_writes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.upsert([rec("a", [1, 0, 0]), rec("b", [1, 0])])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR
    assert ok(await store.count()()) == 0


async def test_upsert_rejects_nan_values(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.upsert([rec("a", [math.nan, 0, 0])])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR


async def test_delete_stale_removes_only_unkept_rows_of_that_source(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert(
        [rec("a1", [1, 0, 0], "A"), rec("a2", [0, 1, 0], "A"), rec("a3", [0, 0, 1], "A"), rec("b1", [1, 1, 0], "B")]
    )()
    assert ok(await store.delete_stale("A", ["a2"])()) == 2
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["a2", "b1"]


async def test_delete_stale_with_everything_kept_deletes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A")])()
    assert ok(await store.delete_stale("A", ["a1"])()) == 0
    assert ok(await store.delete_stale("missing", [])()) == 0


async def test_prune_deletes_whole_sources_of_its_origin_only(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert(
        [
            rec("a1", [1, 0, 0], "A"),
            rec("a2", [0, 1, 0], "A"),
            rec("b1", [0, 0, 1], "B"),
            rec("c1", [1, 1, 0], "C"),
            rec("x1", [1, 0, 1], "A", origin="other/load"),
        ]
    )()
    assert ok(await store.prune("p/load", ["A", "B"])()) == 3
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["c1", "x1"]


async def test_prune_with_kept_ids_deletes_only_stale_rows(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A"), rec("a2", [0, 1, 0], "A"), rec("b1", [0, 0, 1], "B")])()
    assert ok(await store.prune("p/load", ["A", "B"], ["a2", "b1"])()) == 1
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["a2", "b1"]


async def test_prune_of_no_sources_deletes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A")])()
    assert ok(await store.prune("p/load", [])()) == 0
    assert ok(await store.prune("p/load", ["missing"])()) == 0
    assert ok(await store.count()()) == 1


async def test_existing_ids_are_the_stored_ones_among_those_asked(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.existing_ids([])()) == set()
    await store.upsert([rec("a1", [1, 0, 0], "A"), rec("b1", [0, 1, 0], "B")])()
    assert ok(await store.existing_ids(["a1", "zz", "a1", "b1"])()) == {"a1", "b1"}
    assert ok(await store.existing_ids(["zz"])()) == set()


async def test_source_ids_lists_the_distinct_sources_of_an_origin(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.source_ids("p/load")()) == []
    await store.upsert(
        [
            rec("b1", [1, 0, 0], "B"),
            rec("a1", [0, 1, 0], "A"),
            rec("a2", [0, 0, 1], "A"),
            rec("z", [1, 1, 0], "Z", origin="q/x"),
        ]
    )()
    assert ok(await store.source_ids("p/load")()) == ["A", "B"]
    assert ok(await store.source_ids("q/x")()) == ["Z"]


async def test_upsert_moves_a_row_to_its_new_origin(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A", origin="")])()
    assert ok(await store.upsert([rec("a1", [1, 0, 0], "A")])()) == 1
    assert ok(await store.source_ids("p/load")()) == ["A"]
    assert ok(await store.source_ids("")()) == []


# -- reads ---------------------------------------------------------------------


async def test_query_ranks_by_cosine_best_first(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("far", [-1, 0, 0]), rec("near", [1, 0.1, 0]), rec("mid", [1, 1, 0])])()
    result = await hits(store, [1, 0, 0])
    assert [h.id for h in result] == ["near", "mid", "far"]
    assert [h.score for h in result] == pytest.approx([1 / math.sqrt(1.01), 1 / math.sqrt(2), -1.0], abs=1e-6)


async def test_query_breaks_ties_by_id(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec(rid, [0, 1, 0]) for rid in ("c", "a", "b")])()
    assert [h.id for h in await hits(store, [0, 1, 0])] == ["a", "b", "c"]


async def test_query_returns_at_most_top_k(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec(str(i), [1, i, 0]) for i in range(5)])()
    assert [h.id for h in await hits(store, [1, 0, 0], k=2)] == ["0", "1"]


async def test_query_returns_text_source_and_meta(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], "doc", text="hello", path="a.md", chunk_index=0)])()
    [hit] = await hits(store, [1, 0, 0])
    assert (hit.id, hit.source_id, hit.text) == ("a", "doc", "hello")
    assert hit.meta == {"path": "a.md", "chunk_index": 0}


async def test_query_filters_on_meta_equality(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], lang="en"), rec("b", [1, 0, 0], lang="fr"), rec("c", [0, 1, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0], lang="fr")] == ["b"]
    assert await hits(store, [1, 0, 0], lang="de") == []


async def test_query_filter_distinguishes_true_from_one(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], flag=True), rec("b", [1, 0, 0], flag=1)])()
    assert [h.id for h in await hits(store, [1, 0, 0], flag=True)] == ["a"]


async def test_query_filter_contains_nested_values(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], tags=["x", "y"], doc={"lang": "en", "v": 2}), rec("b", [1, 0, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0], tags=["y"])] == ["a"]
    assert [h.id for h in await hits(store, [1, 0, 0], doc={"lang": "en"})] == ["a"]


async def test_query_with_a_zero_vector_scores_zero(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0]), rec("z", [0, 0, 0])])()
    assert [(h.id, h.score) for h in await hits(store, [0, 0, 0])] == [("a", 0.0), ("z", 0.0)]


async def test_zero_vector_rows_rank_last(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [0, 0, 0]), rec("b", [-1, 0, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0])] == ["b", "a"]


async def test_query_with_a_wrong_dimension_is_a_db_error(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0])])()
    res = await store.query([1, 0], 3)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR


async def test_plans_are_replayable(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    plan = store.upsert([rec("a", [1, 0, 0])])
    assert ok(await plan()) == 1
    assert ok(await plan()) == 0


# -- both stores agree -----------------------------------------------------------

VECTORS = st.lists(st.integers(-3, 3), min_size=3, max_size=3)
RECORDS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), VECTORS, st.sampled_from(["s1", "s2"]), st.sampled_from(["en", "fr"])),
    max_size=12,
)


def _tie_groups(result: list[QueryHit], k: int) -> list[tuple[float, frozenset[str]]]:
    """Hits grouped by score, since float32 rounding may order near-ties either way.

    When the result is cut at ``k``, its last group may hold either members
    of a tie, so only the complete groups are compared.
    """
    groups: list[tuple[float, set[str]]] = []
    for h in result:
        if groups and abs(groups[-1][0] - h.score) < 1e-5:
            groups[-1][1].add(h.id)
        else:
            groups.append((h.score, {h.id}))
    if len(result) == k:
        groups = groups[:-1]
    return [(round(score, 4), frozenset(ids)) for score, ids in groups]


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
            answers.append((written, deleted, pruned, sources, _tie_groups(await hits(store, query, k, **flt), k)))
        assert answers[0] == answers[1]
