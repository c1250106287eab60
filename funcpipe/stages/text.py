"""Text stages: ``text.clean`` and ``text.chunk``, over pure functions.

`clean_text` normalises a string; `split_text` cuts one into spans no longer
than a size, preferring Markdown headings and paragraph breaks, then
sentence ends, then line breaks, then spaces, and overlapping consecutive
spans by at most a given number of characters. The stage factories lift
them over item streams.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from funcpipe.core import AsyncGen, Err, ErrCode, ErrInfo, Item, Ok, Result, stable_id
from funcpipe.stages.base import StageContext, Transform
from funcpipe.stages.config import ChunkConfig, CleanConfig


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of a text: ``text == source[start:end]``."""

    start: int
    end: int
    text: str


# -- clean ------------------------------------------------------------------

_NEWLINES = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_HSPACE_RUN = re.compile(r"(?<=\S)[^\S\n]+")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
# Controls (category Cc) but tab and newline, lone surrogates (undecodable
# bytes, which cannot be written as UTF-8) and the byte-order mark.
_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\ud800-\udfff]")
# What no store can hold, so it goes even with strip_control off: NUL, which
# PostgreSQL refuses in text and in jsonb, and lone surrogates, which cannot
# be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, config: CleanConfig) -> str:
    """Normalise ``text``: Unicode form, line breaks, control characters and whitespace.

    NUL and lone surrogates (U+D800 to U+DFFF) always go: no store can hold
    them. With ``strip_control`` the other control characters but tab and
    newline go too, and the byte-order mark. Line breaks of every kind become ``\\n``. With ``collapse_whitespace``,
    runs of spaces inside a line become one space (indentation is kept),
    trailing spaces go, there is at most one blank line in a row, and the
    text is stripped. The function is idempotent.
    """
    text = _NEWLINES.sub("\n", text)
    # Controls go before normalising: removing one between a letter and a
    # combining mark would otherwise leave an uncomposed pair behind.
    if config.strip_control:
        text = _DROPPED.sub("", text)
    elif _UNSTORABLE.search(text):
        text = _UNSTORABLE.sub("", text)
    if config.normalize != "none":
        text = unicodedata.normalize(config.normalize, text)
    if config.collapse_whitespace:
        text = _HSPACE_RUN.sub(" ", text)
        text = _TRAILING.sub("", text)
        text = _BLANK_LINES.sub("\n\n", text)
        text = text.strip()
    return text


# -- split ------------------------------------------------------------------

_SECTION_BREAK = re.compile(r"\n(?=#{1,6}[^\S\n])")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"'\u2019\u201d)\]]*(?=\s)")
_LINE_BREAK = re.compile(r"\n")
_SPACE = re.compile(r"\s")
_WORD_START = re.compile(r"(?<!\S)\S")
_HEADING = re.compile(r"^#{1,6}[^\S\n]+(.+?)[^\S\n]*#*[^\S\n]*$", re.MULTILINE)


def _positions(pattern: re.Pattern[str], text: str, *, at_end: bool) -> list[int]:
    return [m.end() if at_end else m.start() for m in pattern.finditer(text)]


def _last_in(positions: list[int], lo: int, hi: int) -> int | None:
    """The largest position p with lo < p <= hi, if any."""
    i = bisect.bisect_right(positions, hi)
    if i and positions[i - 1] > lo:
        return positions[i - 1]
    return None


def _first_in(positions: list[int], lo: int, hi: int) -> int | None:
    """The smallest position p with lo <= p <= hi, if any."""
    i = bisect.bisect_left(positions, lo)
    if i < len(positions) and positions[i] <= hi:
        return positions[i]
    return None


class _Boundaries:
    """Every candidate cut in a text, by preference, as sorted offsets."""

    def __init__(self, text: str) -> None:
        # A cut is where a piece ends; each of these lies on whitespace, so a
        # cut there never splits a word.
        self.sections = _positions(_SECTION_BREAK, text, at_end=False)
        self.paragraphs = _positions(_PARAGRAPH_BREAK, text, at_end=False)
        self.sentences = _positions(_SENTENCE_END, text, at_end=True)
        self.lines = _positions(_LINE_BREAK, text, at_end=False)
        self.spaces = _positions(_SPACE, text, at_end=False)
        # Where a piece may start, for the overlap: a sentence or a word start.
        self.word_starts = _positions(_WORD_START, text, at_end=False)
        self.sentence_starts = sorted({_skip_space(text, p) for p in self.sentences + self.paragraphs})

    def cut(self, start: int, limit: int, floor: int) -> tuple[int, bool] | None:
        """The preferred cut in ``(max(start, floor), limit]``, and whether to overlap after it.

        A cut before a Markdown heading may lie anywhere past the first
        quarter of the window; a paragraph, sentence or line cut must lie in
        its second half, so that a piece is never a stub. After a heading or
        paragraph cut the next piece starts afresh: overlap carries context
        across a cut inside flowing text, not into the next section.
        """
        width = limit - start
        quarter = max(start + width // 4, floor)
        found = _last_in(self.sections, quarter, limit)
        if found is not None:
            return found, False
        half = max(start + width // 2, floor)
        found = _last_in(self.paragraphs, half, limit)
        if found is not None:
            return found, False
        for positions in (self.sentences, self.lines):
            found = _last_in(positions, half, limit)
            if found is not None:
                return found, True
        found = _last_in(self.spaces, max(start, floor), limit)
        return None if found is None else (found, True)

    def restart(self, lo: int, hi: int) -> int | None:
        """The earliest sentence start, else word start, in ``[lo, hi]``."""
        found = _first_in(self.sentence_starts, lo, hi)
        return found if found is not None else _first_in(self.word_starts, lo, hi)


def _skip_space(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def split_text(text: str, size: int, overlap: int = 0, min_size: int = 1) -> list[Span]:
    """Cut ``text`` into spans of at most ``size`` characters.

    Each span is stripped of surrounding whitespace and ends before the
    latest Markdown heading past the first quarter of its window, else at
    the latest paragraph break, sentence end or line break in the second
    half of its window, else at the latest space; a word is cut only if it
    is longer than ``size``. After a cut inside a paragraph, the next span
    starts at most ``overlap`` characters before the previous one ends, at
    a sentence start if there is one in that range, else at a word start.
    Together the spans cover every non-whitespace character; spans shorter
    than ``min_size`` are left out.

    Raises:
        ValueError: if ``size < 1``, ``overlap < 0`` or ``overlap >= size``.
    """
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    n = len(text)
    bounds = _Boundaries(text)
    spans: list[Span] = []
    pos = _skip_space(text, 0)
    # The first non-space after the previous cut: a piece must reach past it,
    # or it would lie inside the previous one.
    floor = pos
    while pos < n:
        end = _trim_end(text, pos, n)
        if end - pos <= size:
            spans.append(Span(pos, end, text[pos:end]))
            break
        limit = pos + size
        found = bounds.cut(pos, limit, floor)
        if found is None:
            if pos < floor:
                # The overlap left no room for a whole word: start afresh at the floor.
                pos = floor
                continue
            # A word longer than size: nothing better than a hard cut.
            found = (limit, True)
        cut, overlapping = found
        end = _trim_end(text, pos, cut)
        spans.append(Span(pos, end, text[pos:end]))
        floor = _skip_space(text, cut)
        pos = floor
        if overlap and overlapping:
            restart = bounds.restart(max(spans[-1].start + 1, cut - overlap), cut)
            if restart is not None and restart < end:
                pos = restart
    return [s for s in spans if len(s.text.strip()) >= min_size]


def section_titles(text: str) -> list[tuple[int, str]]:
    """The Markdown ATX headings of ``text`` as ``(offset, title)``, in order."""
    return [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]


def _section_at(titles: list[tuple[int, str]], offsets: list[int], pos: int) -> str | None:
    i = bisect.bisect_right(offsets, pos)
    return titles[i - 1][1] if i else None


# -- stages -----------------------------------------------------------------


def _text_of(data: object) -> str | None:
    """The text carried by item data: the data if a string, else ``data["text"]`` if that is one."""
    if isinstance(data, str):
        return data
    if isinstance(data, Mapping):
        text = data.get("text")
        if isinstance(text, str):
            return text
    return None


def _not_text(stage: str, data: object) -> ErrInfo:
    kind = type(data).__name__
    hint = " (read files with mode: text)" if isinstance(data, bytes | bytearray) else ""
    return ErrInfo(
        ErrCode.BAD_INPUT, f"{stage} expects text (a string or an object with a 'text' string), got {kind}{hint}"
    )


def _per_text(stage: str, ctx: StageContext, each: Callable[[Item, str], list[Item]]) -> Transform:
    """A stage applying ``each(item, text)`` to every item that has text; others become BAD_INPUT."""

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        async def run() -> AsyncIterator[Result[Item, ErrInfo]]:
            async for r in upstream():
                if isinstance(r, Err):
                    yield r
                    continue
                item = r.value
                text = _text_of(item.data)
                if text is None:
                    yield Err(ctx.fail(item, _not_text(stage, item.data)))
                    continue
                for out in each(item, text):
                    yield Ok(out)

        return run

    return transform


def storable(value: object) -> object:
    """``value`` with NUL and lone surrogates removed from every string in it, keys included."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, Mapping):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(storable(v) for v in value) if type(value) in (list, tuple) else value
    return value


def clean(config: CleanConfig, ctx: StageContext) -> Transform:
    """The ``text.clean`` stage: `clean_text` on each item's text; ids and lineage are kept.

    The meta loses its NUL characters and lone surrogates too (`storable`),
    as PostgreSQL refuses them in jsonb; nothing else in it changes.
    """

    def each(item: Item, text: str) -> list[Item]:
        cleaned = clean_text(text, config)
        data = item.data
        meta = {storable(k): storable(v) for k, v in item.meta.items()}
        return [item.evolve(data={**data, "text": cleaned} if isinstance(data, Mapping) else cleaned, meta=meta)]

    return _per_text("text.clean", ctx, each)


def chunk(config: ChunkConfig, ctx: StageContext) -> Transform:
    """The ``text.chunk`` stage: each text item becomes its chunks, in order.

    A chunk's data is its text; its meta is the source's meta plus
    ``chunk_index``, ``chunk_count``, ``start`` and ``end`` (offsets in the
    source text) and ``section`` (the Markdown heading it falls under, if
    any). Its id is the `stable_id` of the source id, the text, the chunker
    settings and the index, so re-chunking unchanged text gives the same ids.
    A source with no text is reported as filtered.
    """
    settings = {"size": config.size, "overlap": config.overlap, "min_size": config.min_size}

    def chunks_of(item: Item, text: str) -> list[Item]:
        spans = split_text(text, config.size, config.overlap, config.min_size)
        titles = section_titles(text)
        offsets = [t[0] for t in titles]
        source_id = item.source_id or item.id
        out: list[Item] = []
        for index, span in enumerate(spans):
            meta: dict[str, object] = {
                **item.meta,
                "chunk_index": index,
                "chunk_count": len(spans),
                "start": span.start,
                "end": span.end,
            }
            section = _section_at(titles, offsets, span.start)
            if section is not None:
                meta["section"] = section
            cid = stable_id({"source_id": source_id, "text": span.text, "chunker": settings, "index": index})
            out.append(Item(cid, span.text, meta, source_id))
        return out

    def each(item: Item, text: str) -> list[Item]:
        chunks = chunks_of(item, text)
        if not chunks:
            ctx.filtered(item, "no text")
        return chunks

    return _per_text("text.chunk", ctx, each)
