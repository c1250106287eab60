"""Tests of funcpipe.stages.text: `clean_text`, `split_text` and the two stages over them."""

from __future__ import annotations

import unicodedata
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.core import Err, ErrCode, ErrInfo, Item, Ok, async_gen_from_results, collect, stable_id
from funcpipe.policy.events import EventLog
from funcpipe.stages.base import StageContext
from funcpipe.stages.config import ChunkConfig, CleanConfig
from funcpipe.stages.text import Span, chunk, clean, clean_text, section_titles, split_text

FAST = settings(max_examples=150, derandomize=True, deadline=None)

WORDS = st.sampled_from(
    ["a", "pipeline", "embeds", "chunks", "I", "retry", "x" * 30, "supercalifragilistic", "é", "多"]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n", ". ", "! ", "? ", ".\n\n", "\t", "\n  \n"])
PROSE = st.lists(st.one_of(WORDS, SEPARATORS), max_size=120).map("".join)
ANY_TEXT = st.one_of(PROSE, st.text(max_size=300))
SIZES = st.tuples(st.integers(16, 120), st.integers(0, 60)).filter(lambda so: so[1] < so[0])


def _non_space_offsets(text: str) -> set[int]:
    return {i for i, ch in enumerate(text) if not ch.isspace()}


def _word_length_at(text: str, i: int) -> int:
    """Length of the maximal run of non-whitespace around offset i."""
    lo = i
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    hi = i
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    return hi - lo


def _splits_word(text: str, offset: int) -> bool:
    return 0 < offset < len(text) and not text[offset - 1].isspace() and not text[offset].isspace()


# -- clean_text ---------------------------------------------------------------


@FAST
@given(ANY_TEXT)
def test_clean_is_idempotent(text: str) -> None:
    once = clean_text(text, CleanConfig())
    assert clean_text(once, CleanConfig()) == once


@FAST
@given(ANY_TEXT)
def test_clean_leaves_no_control_character_but_tab_and_newline(text: str) -> None:
    out = clean_text(text, CleanConfig())
    assert all(ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs") for ch in out)


@FAST
@given(ANY_TEXT)
def test_clean_output_is_nfc(text: str) -> None:
    out = clean_text(text, CleanConfig())
    assert unicodedata.normalize("NFC", out) == out


@FAST
@given(ANY_TEXT)
def test_clean_collapses_blank_lines_and_trailing_space(text: str) -> None:
    out = clean_text(text, CleanConfig())
    assert "\n\n\n" not in out
    assert out == out.strip()
    assert all(line == line.rstrip() for line in out.split("\n"))


@FAST
@given(PROSE)
def test_clean_keeps_the_words_of_plain_text(text: str) -> None:
    assert clean_text(text, CleanConfig()).split() == text.split()


def test_clean_collapses_inner_spaces_but_keeps_indentation() -> None:
    assert clean_text("a   b\t\tc\n    indented  line", CleanConfig()) == "a b c\n    indented line"


def test_clean_turns_every_line_break_into_newline() -> None:
    assert clean_text("a\r\nb\rc\u2028d\x85e", CleanConfig()) == "a\nb\nc\nd\ne"


def test_clean_removes_controls_bom_and_lone_surrogates() -> None:
    assert clean_text("\ufeffa\x00b\x1bc\udcff", CleanConfig()) == "abc"


def test_clean_composes_to_nfc() -> None:
    assert clean_text("e\u0301", CleanConfig()) == "\u00e9"


def test_clean_nfkc_folds_compatibility_characters() -> None:
    assert clean_text("\ufb01le", CleanConfig(normalize="NFKC")) == "file"


def test_clean_with_everything_off_only_unifies_line_breaks() -> None:
    config = CleanConfig(normalize="none", strip_control=False, collapse_whitespace=False)
    assert clean_text(" e\u0301\x1b  a\r\n", config) == " e\u0301\x1b  a\n"


def test_clean_always_removes_what_no_store_can_hold() -> None:
    for strip_control in (True, False):
        config = CleanConfig(normalize="none", strip_control=strip_control, collapse_whitespace=False)
        assert clean_text("a\x00b\ud800c\udfffd", config) == "abcd"


async def test_clean_stage_removes_nul_and_lone_surrogates_from_the_meta_too() -> None:
    meta = {"title": "x\x00y", "tags": ["a\ud83d", ("b\x00",)], "nested": {"k\x00": "\x00v"}, "n": 3, "t": "\t ok"}
    item = Item("i1", "text", meta, "s1")
    [out] = await _run(clean(CleanConfig(), _ctx()), [Ok(item)])
    assert isinstance(out, Ok)
    assert out.value.meta == {"title": "xy", "tags": ["a", ("b",)], "nested": {"k": "v"}, "n": 3, "t": "\t ok"}
    assert (out.value.id, out.value.source_id) == ("i1", "s1")


# -- split_text -----------------------------------------------------------------


@FAST
@given(ANY_TEXT, SIZES)
def test_spans_are_slices_no_longer_than_size(text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    for span in split_text(text, size, overlap):
        assert span.text == text[span.start : span.end]
        assert 0 < len(span.text) <= size
        assert span.text == span.text.strip()


@FAST
@given(ANY_TEXT, SIZES)
def test_spans_cover_every_non_space_character(text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    covered: set[int] = set()
    for span in split_text(text, size, overlap):
        covered.update(range(span.start, span.end))
    assert _non_space_offsets(text) <= covered


@FAST
@given(ANY_TEXT, SIZES)
def test_spans_advance_and_overlap_at_most_overlap(text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    spans = split_text(text, size, overlap)
    for prev, nxt in pairwise(spans):
        assert nxt.start > prev.start
        assert nxt.end > prev.end
        assert prev.end - nxt.start <= overlap


@FAST
@given(ANY_TEXT, SIZES)
def test_spans_split_only_words_longer_than_size(text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    for span in split_text(text, size, overlap):
        for offset in (span.start, span.end):
            if _splits_word(text, offset):
                assert _word_length_at(text, offset) > size


def test_text_within_size_is_one_span() -> None:
    assert split_text("  short text \n", 50, 10) == [Span(2, 12, "short text")]


def test_blank_text_has_no_span() -> None:
    assert split_text(" \n\t ", 50, 10) == []


def test_split_prefers_a_paragraph_break() -> None:
    first = "One sentence here. Another one follows it."
    second = "Second paragraph starts. It goes on."
    text = f"{first}\n\n{second}"
    assert [s.text for s in split_text(text, 60, 0)] == [first, second]


def test_split_prefers_a_sentence_end_over_a_space() -> None:
    text = "The first sentence is here. The second sentence is rather longer than that."
    spans = split_text(text, 50, 0)
    assert spans[0].text == "The first sentence is here."


def test_split_falls_back_to_a_space() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    spans = split_text(text, 20, 0)
    assert [s.text for s in spans] == ["alpha beta gamma", "delta epsilon zeta", "eta theta iota kappa"]


def test_split_cuts_a_word_longer_than_size() -> None:
    assert [s.text for s in split_text("x" * 40, 16, 0)] == ["x" * 16, "x" * 16, "x" * 8]


def test_split_cuts_before_a_heading_early_in_the_window() -> None:
    text = "Intro words here and more.\n## Next section\n\nIts body text goes on for quite a while."
    spans = split_text(text, 60, 10)
    assert spans[0].text == "Intro words here and more."
    assert spans[1].text.startswith("## Next section")


def test_no_overlap_after_a_paragraph_cut() -> None:
    first = "One sentence here. Another one follows it."
    text = f"{first}\n\nSecond paragraph starts. It goes on."
    spans = split_text(text, 60, 30)
    assert spans[1].start == text.index("Second")


def test_overlap_restarts_at_a_sentence_start() -> None:
    text = "Alpha one. Beta two three. Gamma four five six. Delta seven eight nine ten."
    spans = split_text(text, 48, 20)
    assert spans[0].text == "Alpha one. Beta two three. Gamma four five six."
    assert spans[1].text.startswith("Gamma four")


def test_min_size_drops_short_spans() -> None:
    text = "A long first paragraph that fills the window.\n\nok"
    assert [s.text for s in split_text(text, 48, 0, min_size=3)] == ["A long first paragraph that fills the window."]


def test_split_rejects_overlap_not_below_size() -> None:
    try:
        split_text("text", 10, 10)
    except ValueError as exc:
        assert "overlap" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_section_titles_finds_markdown_headings() -> None:
    text = "# Title\n\nintro\n\n## Switching provider ##\n\nbody\n#not a heading"
    assert section_titles(text) == [(0, "Title"), (16, "Switching provider")]


# -- stages -----------------------------------------------------------------


def _ctx(events: EventLog | None = None) -> StageContext:
    return StageContext(stage_id="text", events=events or EventLog())


async def _run(transform: object, inputs: list[Ok[Item] | Err[ErrInfo]]) -> list[Ok[Item] | Err[ErrInfo]]:
    stream = transform(async_gen_from_results(inputs))  # type: ignore[operator]
    return list(await collect(stream))


async def test_clean_stage_cleans_text_and_keeps_identity() -> None:
    item = Item("i1", "a  b\r\n", {"path": "a.md"}, "s1")
    [out] = await _run(clean(CleanConfig(), _ctx()), [Ok(item)])
    assert out == Ok(Item("i1", "a b", {"path": "a.md"}, "s1"))


async def test_clean_stage_cleans_the_text_field_of_a_dict() -> None:
    item = Item("i1", {"text": " x\x00 ", "lang": "en"}, {}, "s1")
    [out] = await _run(clean(CleanConfig(), _ctx()), [Ok(item)])
    assert isinstance(out, Ok)
    assert out.value.data == {"text": "x", "lang": "en"}


async def test_clean_stage_fails_bytes_as_bad_input() -> None:
    item = Item("i1", b"raw", {}, "s1")
    [out] = await _run(clean(CleanConfig(), _ctx()), [Ok(item)])
    assert isinstance(out, Err)
    assert out.error.code == ErrCode.BAD_INPUT
    assert "mode: text" in out.error.msg
    assert out.error.meta["item"] == item
    assert out.error.meta["stage"] == "text"


DOC = "# Guide\n\nFirst paragraph about pipelines.\n\n## Retry\n\nRetries repeat failed calls. They back off."


async def test_chunk_stage_emits_chunks_with_lineage_and_offsets() -> None:
    source = Item("src", DOC, {"path": "guide.md"}, "src")
    out = await _run(chunk(ChunkConfig(size=40, overlap=0), _ctx()), [Ok(source)])
    chunks = [r.value for r in out if isinstance(r, Ok)]
    assert len(chunks) == len(out) > 1
    for index, c in enumerate(chunks):
        assert c.source_id == "src"
        assert c.meta["path"] == "guide.md"
        assert c.meta["chunk_index"] == index
        assert c.meta["chunk_count"] == len(chunks)
        start, end = c.meta["start"], c.meta["end"]
        assert isinstance(start, int)
        assert isinstance(end, int)
        assert DOC[start:end] == c.data


async def test_chunk_ids_follow_source_text_settings_and_index() -> None:
    source = Item("src", DOC, {}, "src")
    [first, *_] = await _run(chunk(ChunkConfig(size=40, overlap=0, min_size=1), _ctx()), [Ok(source)])
    assert isinstance(first, Ok)
    expected = stable_id(
        {"source_id": "src", "text": first.value.data, "chunker": {"size": 40, "overlap": 0, "min_size": 1}, "index": 0}
    )
    assert first.value.id == expected


async def test_chunk_ids_are_stable_across_runs_and_change_with_settings() -> None:
    source = Item("src", DOC, {}, "src")

    async def ids(config: ChunkConfig) -> list[str]:
        return [r.value.id for r in await _run(chunk(config, _ctx()), [Ok(source)]) if isinstance(r, Ok)]

    assert await ids(ChunkConfig(size=40, overlap=0)) == await ids(ChunkConfig(size=40, overlap=0))
    assert set(await ids(ChunkConfig(size=40, overlap=0))).isdisjoint(await ids(ChunkConfig(size=40, overlap=5)))


async def test_identical_chunk_texts_of_one_source_get_distinct_ids() -> None:
    source = Item("src", "same words here\n\nsame words here", {}, "src")
    out = await _run(chunk(ChunkConfig(size=16, overlap=0), _ctx()), [Ok(source)])
    ids = [r.value.id for r in out if isinstance(r, Ok)]
    assert len(ids) == 2
    assert len(set(ids)) == 2


async def test_chunk_meta_names_the_markdown_section() -> None:
    source = Item("src", DOC, {}, "src")
    out = await _run(chunk(ChunkConfig(size=40, overlap=0), _ctx()), [Ok(source)])
    sections = [r.value.meta.get("section") for r in out if isinstance(r, Ok)]
    assert sections[0] == "Guide"
    assert sections[-1] == "Retry"


async def test_a_chunk_opening_with_a_title_and_a_subheading_sits_in_the_subsection() -> None:
    text = (
        "# Switching providers\n\n## How do I switch the embedder?\n\nChange the kind line.\n\n"
        "## How do I switch the store?\n\nAdd a DSN to it, read from the environment."
    )
    out = await _run(chunk(ChunkConfig(size=90, overlap=0), _ctx()), [Ok(Item("src", text, {}, "src"))])
    chunks = [(r.value.data, r.value.meta.get("section")) for r in out if isinstance(r, Ok)]
    assert chunks[0][0].startswith("# Switching providers")
    assert chunks[0][1] == "How do I switch the embedder?"
    assert chunks[-1][1] == "How do I switch the store?"


async def test_a_chunk_starting_mid_section_sits_in_that_section_whatever_headings_follow() -> None:
    text = "# A\n\n" + "Body of A goes on. " * 3 + "\n\n# B\n\nBody of B."
    out = await _run(chunk(ChunkConfig(size=40, overlap=0), _ctx()), [Ok(Item("src", text, {}, "src"))])
    sections = [(r.value.data[:8], r.value.meta.get("section")) for r in out if isinstance(r, Ok)]
    assert all(section == "A" for data, section in sections if data.startswith("Body of A"))
    assert sections[-1][1] == "B"


async def test_chunk_stage_reads_the_text_field_of_a_dict() -> None:
    source = Item("src", {"text": "hello world"}, {}, "src")
    [out] = await _run(chunk(ChunkConfig(), _ctx()), [Ok(source)])
    assert isinstance(out, Ok)
    assert out.value.data == "hello world"


async def test_chunk_stage_passes_errors_through() -> None:
    err: Err[ErrInfo] = Err(ErrInfo(ErrCode.BAD_INPUT, "undecodable"))
    assert await _run(chunk(ChunkConfig(), _ctx()), [err]) == [err]


async def test_chunk_stage_fails_non_text_as_bad_input() -> None:
    item = Item("i1", 42, {}, "i1")
    [out] = await _run(chunk(ChunkConfig(), _ctx()), [Ok(item)])
    assert isinstance(out, Err)
    assert out.error.code == ErrCode.BAD_INPUT
    assert out.error.meta["item"] == item


async def test_chunk_stage_reports_a_blank_source_as_filtered() -> None:
    events = EventLog()
    item = Item("i1", "  \n ", {}, "i1")
    assert await _run(chunk(ChunkConfig(), _ctx(events)), [Ok(item)]) == []
    [event] = events.of("filtered")
    assert event.item_id == "i1"
    assert event.data["reason"] == "no text"
