"""Keyword and hybrid retrieval: the store contract for ``memory`` and ``pgvector``, and the laws of RRF.

pgvector runs with ``exact: true`` and its default ``english`` configuration,
which the memory store's tokenisation mirrors; the texts use words whose
stems both agree on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.adapters._retrieval import bm25, keyword_terms, rrf
from funcpipe.adapters.config import PgvectorConfig
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.ports import Fingerprint, QueryHit, RetrievalMode, VectorRecord, VectorStorePort
from funcpipe.run.resources import RunResources
from tests.pg import unique_name

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)

StoreFactory = Callable[[], VectorStorePort]

# Vectors point along three axes; texts talk about different things, so the
# vector and keyword rankings disagree on purpose.
CORPUS = [
    ("a", (1.0, 0.0, 0.0), "The shutdown handler drains the queue when a signal arrives."),
    ("b", (0.9, 0.1, 0.0), "Retries back off exponentially with full jitter."),
    ("c", (0.0, 1.0, 0.0), "Interrupt handling: a signal stops reading and drains in-flight work."),
    ("d", (0.0, 0.0, 1.0), "Tables record the embedder fingerprint in a comment."),
    ("e", (0.0, 0.7, 0.7), "Rate limits use a token bucket per key."),
]


@pytest.fixture(params=["memory", "pgvector"])
def new_store(request: pytest.FixtureRequest) -> StoreFactory:
    """Makes an empty store of the parametrised kind (a fresh table for pgvector)."""
    if request.param == "memory":
        return MemoryStore
    resources: RunResources = request.getfixturevalue("pg_resources")
    return lambda: PgvectorStore(PgvectorConfig(table=unique_name(), exact=True), resources)


async def filled(new_store: StoreFactory) -> VectorStorePort:
    store = new_store()
    assert await store.ensure(FP)() == Ok(None)
    records = [
        VectorRecord(rid, f"src-{rid}", text, list(vec), {"group": "odd" if rid in "ace" else "even"}, "p/load")
        for rid, vec, text in CORPUS
    ]
    assert isinstance(await store.upsert(records)(), Ok)
    return store


async def search(
    store: VectorStorePort,
    text: str | None,
    mode: RetrievalMode,
    vector: Sequence[float] = (1.0, 0.0, 0.0),
    k: int = 5,
    **flt: object,
) -> list[QueryHit]:
    res = await store.query(list(vector), k, flt or None, text=text, mode=mode)()
    assert isinstance(res, Ok), res
    return res.value


def ids(hits: Sequence[QueryHit]) -> list[str]:
    return [h.id for h in hits]


# -- keyword -------------------------------------------------------------------


async def test_keyword_finds_only_rows_sharing_a_term_best_first(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    found = await search(store, "what happens on a signal? drains", "keyword")
    assert set(ids(found)) == {"a", "c"}
    assert all(h.score > 0 and h.scores == {"keyword": h.score} for h in found)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)


async def test_keyword_ranks_a_rare_term_above_a_common_one(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    # "signal" is in two rows, "jitter" in one: the row with the rarer term wins.
    found = await search(store, "signal jitter", "keyword")
    assert ids(found)[0] == "b"


async def test_keyword_matches_inflections(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    assert ids(await search(store, "retry", "keyword")) == ["b"]
    assert ids(await search(store, "recording fingerprints", "keyword")) == ["d"]


async def test_keyword_honours_the_filter_and_top_k(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    assert ids(await search(store, "signal drains", "keyword", group="even")) == []
    assert len(await search(store, "signal drains", "keyword", k=1)) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "the and of",
        "'; DROP TABLE chunks; --",
        "a & b | !c <-> (d):* \\ ' \"",
        'ctrl-c OR "signal" -jitter',
        "\u00e9t\u00e9 \u65e5\u672c \U0001f600",
    ],
)
async def test_keyword_is_safe_for_any_text(new_store: StoreFactory, text: str) -> None:
    store = await filled(new_store)
    for mode in ("keyword", "hybrid"):
        found = await search(store, text, mode)  # type: ignore[arg-type]
        assert all(h.id in "abcde" for h in found)
    assert await store.count()() == Ok(len(CORPUS))


async def test_keyword_and_hybrid_need_the_text(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    for mode in ("keyword", "hybrid"):
        res = await store.query([1.0, 0.0, 0.0], 3, None, text=None, mode=mode)()  # type: ignore[arg-type]
        assert isinstance(res, Err)
        assert res.error.code == ErrCode.SERVICE_SPECIFIC


# -- hybrid --------------------------------------------------------------------


async def test_hybrid_puts_a_row_first_in_both_rankings_first(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    found = await search(store, "shutdown handler", "hybrid", vector=(1.0, 0.0, 0.0))
    assert ids(found)[0] == "a"
    assert set(found[0].scores) == {"vector", "keyword"}
    assert found[0].scores["vector"] == pytest.approx(1.0)


async def test_hybrid_finds_what_only_keywords_find(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    # The vector points at "d"; the words are in "c" only.
    found = await search(store, "interrupt", "hybrid", vector=(0.0, 0.0, 1.0), k=2)
    assert ids(found) == ["c", "d"] or ids(found) == ["d", "c"]
    by_id = {h.id: h for h in found}
    assert "keyword" in by_id["c"].scores
    assert "keyword" not in by_id["d"].scores


async def test_hybrid_scores_are_the_fused_ones(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    found = await search(store, "signal", "hybrid", vector=(0.0, 1.0, 0.0))
    vector_order = ids(await search(store, None, "vector", vector=(0.0, 1.0, 0.0)))
    keyword_order = ids(await search(store, "signal", "keyword"))
    assert [(h.id, h.score) for h in found] == [
        (rid, pytest.approx(score)) for rid, score in rrf([vector_order, keyword_order])[:5]
    ]


async def test_hybrid_honours_the_filter(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    found = await search(store, "signal", "hybrid", group="even")
    assert set(ids(found)) <= {"b", "d"}
    assert found


async def test_vector_mode_reports_its_own_score(new_store: StoreFactory) -> None:
    store = await filled(new_store)
    found = await search(store, "ignored words", "vector")
    assert ids(found)[:2] == ["a", "b"]
    assert all(h.scores == {"vector": h.score} for h in found)


# -- pgvector: the full-text column --------------------------------------------


async def test_pgvector_adds_the_full_text_column_to_an_older_table(pg_resources: RunResources) -> None:
    config = PgvectorConfig(table=unique_name(), exact=True)
    store = PgvectorStore(config, pg_resources)
    assert await store.ensure(FP)() == Ok(None)
    pool = await pg_resources.pg_pool(None)
    await pool.execute(f'ALTER TABLE "{config.table}" DROP COLUMN fts')
    res = await store.query([1.0, 0.0, 0.0], 3, text="shutdown", mode="hybrid")()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC and "funcpipe run" in res.error.msg
    assert await store.ensure(FP)() == Ok(None)  # a table made before the column existed
    assert isinstance(
        await store.upsert([VectorRecord("x", "s", "graceful shutdown", [1.0, 0.0, 0.0], {}, "p/load")])(), Ok
    )
    assert ids(await search(store, "shutdown", "keyword")) == ["x"]
    indexes = await pool.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = $1", config.table)
    assert any("USING gin (fts)" in r["indexdef"] for r in indexes)


async def test_pgvector_refuses_another_language_than_the_column_was_built_with(
    pg_resources: RunResources,
) -> None:
    table = unique_name()
    assert await PgvectorStore(PgvectorConfig(table=table), pg_resources).ensure(FP)() == Ok(None)
    res = await PgvectorStore(PgvectorConfig(table=table, language="simple"), pg_resources).ensure(FP)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert "'english'" in res.error.msg and "'simple'" in res.error.msg


async def test_pgvector_simple_language_keeps_words_as_written(pg_resources: RunResources) -> None:
    store = PgvectorStore(PgvectorConfig(table=unique_name(), exact=True, language="simple"), pg_resources)
    assert await store.ensure(FP)() == Ok(None)
    record = VectorRecord("x", "s", "def read_config(path): the parser", [1.0, 0.0, 0.0], {}, "p/load")
    assert isinstance(await store.upsert([record])(), Ok)
    assert ids(await search(store, "read_config", "keyword")) == ["x"]
    assert ids(await search(store, "the", "keyword")) == ["x"]  # no stop words in `simple`
    assert ids(await search(store, "parsers", "keyword")) == []  # and no stemming


# -- BM25 and RRF --------------------------------------------------------------


def test_keyword_terms_drop_stop_words_and_stem() -> None:
    assert keyword_terms("What happens when the Signals arrive?") == ["happen", "signal", "arriv"]


def test_bm25_saturates_repeats_and_favours_rare_terms() -> None:
    docs = {
        "once": Counter({"signal": 1, "queue": 1}),
        "twice": Counter({"signal": 2, "queue": 1}),
        "rare": Counter({"jitter": 1, "queue": 1}),
    }
    scores = bm25(["signal"], docs)
    assert scores["twice"] > scores["once"]
    assert scores["twice"] < 2 * scores["once"]
    assert bm25(["jitter"], docs)["rare"] > scores["once"]
    assert bm25(["absent"], docs) == {}


_ID = st.sampled_from([f"d{i}" for i in range(12)])
_RANKING = st.lists(_ID, max_size=10, unique=True)


@settings(derandomize=True, max_examples=200)
@given(st.lists(_RANKING, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_rrf_does_not_depend_on_the_order_of_the_rankings(rankings: list[list[str]], rnd: object) -> None:
    shuffled = list(rankings)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert rrf(shuffled) == rrf(rankings)


@settings(derandomize=True, max_examples=200)
@given(st.lists(_RANKING, min_size=1, max_size=4), _ID)
def test_rrf_ranks_first_a_record_first_in_every_ranking(rankings: list[list[str]], top: str) -> None:
    rankings = [[top, *(r for r in ranking if r != top)] for ranking in rankings]
    assert rrf(rankings)[0][0] == top


@settings(derandomize=True, max_examples=200)
@given(st.lists(_RANKING, min_size=1, max_size=4), st.integers(min_value=0, max_value=100))
def test_rrf_orders_by_score_then_id_and_scores_each_record_once(rankings: list[list[str]], k: int) -> None:
    fused = rrf(rankings, k)
    assert [rid for rid, _ in fused] == sorted(
        {r for ranking in rankings for r in ranking},
        key=lambda r: (
            -dict(fused)[r],
            r,
        ),
    )
    for rid, score in fused:
        expected = sum(1.0 / (k + ranking.index(rid) + 1) for ranking in rankings if rid in ranking)
        assert score == pytest.approx(expected)


def test_rrf_breaks_ties_by_id() -> None:
    assert [rid for rid, _ in rrf([["b", "a"], ["a", "b"]])] == ["a", "b"]
    assert rrf([]) == []
    with pytest.raises(ValueError, match="k must be"):
        rrf([["a"]], -1)
