"""Tests of funcpipe.adapters.extractive: the offline answer made of retrieved passages."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.adapters.config import ExtractiveConfig
from funcpipe.adapters.extractive import (
    ELLIPSIS,
    NO_MATCH,
    ExtractiveGenerator,
    create,
    select_passages,
    source_label,
    trim_passage,
)
from funcpipe.core import Ok
from funcpipe.ports import GeneratePort, Generation, QueryHit


def hit(hid: str, text: str, score: float = 0.5, source: str = "src", **meta: object) -> QueryHit:
    return QueryHit(hid, source, text, score, meta)


async def generate(hits: list[QueryHit], question: str = "q", **config: object) -> Generation:
    gen = ExtractiveGenerator(ExtractiveConfig.model_validate(config))
    res = await gen.generate("PROMPT", question=question, hits=hits)()
    assert isinstance(res, Ok)
    return res.value


def test_create_gives_a_generate_port() -> None:
    assert isinstance(create(ExtractiveConfig(), resources=None), GeneratePort)  # type: ignore[arg-type]


async def test_answer_quotes_passages_best_first_with_sources_and_scores() -> None:
    g = await generate([hit("a", "Alpha text.", 0.9, path="docs/a.md"), hit("b", "Beta text.", 0.4, path="b.md")])
    assert g.text == (
        "From the indexed documents, best match first:\n\n"
        "[1] docs/a.md (score 0.900)\nAlpha text.\n\n"
        "[2] b.md (score 0.400)\nBeta text."
    )


async def test_meta_holds_the_passages_and_the_prompt() -> None:
    g = await generate([hit("a", "Alpha.", 0.9, "s1", path="a.md")])
    assert g.meta == {
        "passages": [{"id": "a", "source_id": "s1", "score": 0.9, "text": "Alpha.", "meta": {"path": "a.md"}}],
        "prompt": "PROMPT",
    }


async def test_at_most_max_passages_are_quoted() -> None:
    g = await generate([hit(str(i), f"Passage {i}.") for i in range(5)], max_passages=2)
    assert [p["id"] for p in g.meta["passages"]] == ["0", "1"]  # type: ignore[attr-defined]


async def test_no_hits_says_so() -> None:
    g = await generate([])
    assert g.text == NO_MATCH
    assert g.meta["passages"] == []


async def test_plan_is_replayable() -> None:
    plan = ExtractiveGenerator(ExtractiveConfig()).generate("p", question="q", hits=[hit("a", "x")])
    assert await plan() == await plan()


def test_source_label_uses_path_and_section() -> None:
    assert source_label(hit("a", "t", path="docs/x.md", section="Retry")) == "docs/x.md § Retry"
    assert source_label(hit("a", "t", url="https://example.org/x")) == "https://example.org/x"
    assert source_label(hit("a", "t", source="abcdef0123456789")) == "source abcdef012345"


def test_overlapping_chunks_of_one_source_are_quoted_once() -> None:
    hits = [
        hit("a", "first", source="s", start=0, end=100),
        hit("b", "second", source="s", start=80, end=180),
        hit("c", "third", source="t", start=80, end=180),
        hit("d", "fourth", source="s", start=180, end=260),
    ]
    assert [h.id for h in select_passages(hits, 3)] == ["a", "c", "d"]


def test_identical_passages_are_quoted_once() -> None:
    assert [h.id for h in select_passages([hit("a", "same"), hit("b", " same ")], 3)] == ["a"]


def test_short_passage_is_kept_whole() -> None:
    assert trim_passage("  Short enough.  ", 50) == "Short enough."


def test_long_passage_keeps_the_sentences_about_the_question() -> None:
    text = (
        "Install it with pip. Python 3.11 is needed. "
        "To switch the embedding provider, change the kind line. "
        "Rate limits are policies."
    )
    out = trim_passage(text, 70, "how do I switch the embedding provider?")
    assert out == f"{ELLIPSIS}To switch the embedding provider, change the kind line.{ELLIPSIS}"


def test_long_passage_without_question_words_keeps_its_start() -> None:
    text = "First sentence here. Second sentence here. Third sentence here."
    assert trim_passage(text, 45, "unrelated") == f"First sentence here. Second sentence here.{ELLIPSIS}"


def test_a_single_long_sentence_is_cut_at_a_word() -> None:
    assert trim_passage("one two three four five six seven", 16) == f"one two three{ELLIPSIS}"


@settings(max_examples=150, derandomize=True)
@given(
    st.lists(st.sampled_from(["word", "retry", "x" * 12, ".", " ", "\n\n", "! "]), max_size=80).map("".join),
    st.integers(40, 120),
    st.sampled_from(["", "retry", "word retry"]),
)
def test_trimmed_passage_fits_and_comes_from_the_text(text: str, limit: int, question: str) -> None:
    out = trim_passage(text, limit, question)
    body = out.removeprefix(ELLIPSIS).removesuffix(ELLIPSIS)
    assert len(body) <= limit
    assert body in text
