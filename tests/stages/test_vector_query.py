"""The ``vector.query`` stage's retrieval modes, and the weak-match judgement of ``funcpipe query``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.adapters.memory import MemoryStore
from funcpipe.core import AsyncPlan, ErrInfo, Item, Ok, Result, async_gen_from_results, collect
from funcpipe.ports import Embedding, Fingerprint, Purpose, QueryHit, VectorRecord
from funcpipe.run.query import WEAK_COSINE, WEAK_COVERAGE, check_mode, term_coverage, weak_match
from funcpipe.stages.base import StageContext
from funcpipe.stages.config import VectorQueryConfig
from funcpipe.stages.vectors import query

DOCS = {
    "shutdown": "On the first SIGINT the runner stops reading sources and drains in-flight work.",
    "retry": "Retries back off exponentially with full jitter between attempts.",
    "store": "The pgvector store keeps a full-text column beside the vectors.",
}


class CountingEmbedder:
    """The hashing embedder, counting its calls."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(HashingConfig(dim=64))
        self.calls = 0

    @property
    def fingerprint(self) -> Fingerprint:
        return self.inner.fingerprint

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        self.calls += 1
        return self.inner.embed_batch(texts, purpose)


async def _store(embedder: CountingEmbedder) -> MemoryStore:
    store = MemoryStore()
    assert await store.ensure(embedder.fingerprint)() == Ok(None)
    records = []
    for rid, text in DOCS.items():
        [vec] = (await embedder.inner.embed_batch([text])()).value  # type: ignore[union-attr]
        records.append(VectorRecord(rid, rid, text, list(vec.value), {}, "p/load"))  # type: ignore[union-attr]
    assert isinstance(await store.upsert(records)(), Ok)
    return store


async def _ask(mode: str, question: str) -> tuple[list[Item], int]:
    embedder = CountingEmbedder()
    store = await _store(embedder)
    ctx = StageContext(stage_id="search", adapter=store, embedder=embedder)
    transform = query(VectorQueryConfig.model_validate({"top_k": 2, "mode": mode}), ctx)
    out = await collect(transform(async_gen_from_results([Ok(Item("q1", question, {}, "q1"))])))
    items = [r.value for r in out if isinstance(r, Ok)]
    return items, embedder.calls


async def test_keyword_mode_finds_by_words_and_makes_no_embedding_call() -> None:
    items, calls = await _ask("keyword", "jitter")
    assert [i.data["chunk_id"] for i in items] == ["retry"]  # type: ignore[index]
    assert calls == 0


async def test_hybrid_mode_ranks_with_both_and_embeds_the_question_once() -> None:
    items, calls = await _ask("hybrid", "what happens on SIGINT")
    assert items[0].data["chunk_id"] == "shutdown"  # type: ignore[index]
    assert [i.data["rank"] for i in items] == [1, 2]  # type: ignore[index]
    assert calls == 1


async def test_vector_mode_is_the_default() -> None:
    assert VectorQueryConfig().mode == "vector"
    items, calls = await _ask("vector", "runner drains in-flight work")
    assert items[0].data["chunk_id"] == "shutdown"  # type: ignore[index]
    assert calls == 1


def _hit(text: str, **scores: float) -> QueryHit:
    return QueryHit("h", "s", text, next(iter(scores.values()), 0.0), {}, scores)


def test_term_coverage_is_the_share_of_the_questions_terms_held() -> None:
    assert term_coverage("retry with jitter", "Retries add jitter.") == 1.0
    assert term_coverage("retry with jitter", "Nothing here.") == 0.0
    assert term_coverage("the of and", "anything") == 0.0


def test_a_good_match_is_not_weak() -> None:
    good = _hit("retries back off with jitter", vector=WEAK_COSINE["wordllama"] + 0.1)
    for mode in ("vector", "keyword", "hybrid"):
        assert weak_match("retry jitter", [good], mode, "wordllama") is None


def test_a_low_similarity_is_weak_in_vector_mode_for_a_measured_embedder_only() -> None:
    low = _hit("unrelated", vector=WEAK_COSINE["wordllama"] - 0.01)
    assert "below 0.32" in (weak_match("retry jitter", [low], "vector", "wordllama") or "")
    assert weak_match("retry jitter", [low], "vector", "openai") is None  # its scale is not measured


def test_hybrid_is_weak_only_when_both_signals_are() -> None:
    low_vector_words_ok = _hit("retry jitter", vector=0.1)
    assert weak_match("retry jitter", [low_vector_words_ok], "hybrid", "wordllama") is None
    high_vector_no_words = _hit("unrelated", vector=0.9)
    assert weak_match("retry jitter", [high_vector_no_words], "hybrid", "wordllama") is None
    neither = _hit("unrelated", vector=0.1)
    reason = weak_match("retry jitter", [neither], "hybrid", "wordllama")
    assert reason is not None and "0%" in reason
    assert weak_match("retry jitter", [neither], "hybrid", "openai") is not None  # the words alone decide


def test_keyword_weakness_is_the_share_of_terms() -> None:
    few = _hit("retry only here", keyword=3.0)  # one of four terms
    assert WEAK_COVERAGE > 0.25
    assert weak_match("retry jitter backoff attempts", [few], "keyword") is not None
    assert weak_match("retry", [few], "keyword") is None


def test_no_hits_is_weak() -> None:
    assert weak_match("anything", [], "hybrid") == "nothing matched the question"


def test_an_unknown_mode_names_the_modes() -> None:
    assert check_mode(None) is None
    assert check_mode("keyword") == "keyword"
    with pytest.raises(ValueError, match="did you mean 'hybrid'"):
        check_mode("hybird")
