"""Text stages: ``text.clean`` and ``text.chunk``, over pure functions.

`clean_text` normalises a string; `split_text` cuts one into spans no longer
than a size, preferring Markdown headings and paragraph breaks, then
sentence ends, then line breaks, then spaces, and overlapping consecutive
spans by at most a given number of characters. The stage factories lift
them over item streams.
"""

from __future__ import annotations

import bisect
import heapq
import re
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from funcpipe.core import (
    AsyncGen,
    Err,
    ErrCode,
    ErrInfo,
    Item,
    async_gen_and_then,
    async_gen_from_iterable,
    async_gen_from_results,
    stable_id,
)
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
# A run of spaces to rewrite: a lone " " after a word is already clean, and
# leaving it unmatched keeps the substitution from splitting the text at every space.
_HSPACE_RUN = re.compile(r"(?<=\S)(?: [^\S\n]+|[^\S \n][^\S\n]*)")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
# Controls (category Cc) but tab and newline, lone surrogates (undecodable
# bytes, which cannot be written as UTF-8) and the byte-order mark.
_DROPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\ud800-\udfff]")
# What no store can hold, so it goes even with strip_control off: NUL, which
# PostgreSQL refuses in text and in jsonb, and lone surrogates, which cannot
# be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_BLOCK = 1 << 18
"""Characters cleaned at a time: a regex substitution holds a piece per match, so it works on blocks."""


def clean_text(text: str, config: CleanConfig) -> str:
    """Normalise ``text``: Unicode form, line breaks, control characters and whitespace.

    NUL and lone surrogates (U+D800 to U+DFFF) always go: no store can hold
    them. With ``strip_control`` the other control characters but tab and
    newline go too, and the byte-order mark. Line breaks of every kind become ``\\n``. With ``collapse_whitespace``,
    runs of spaces inside a line become one space (indentation is kept),
    trailing spaces go, there is at most one blank line in a row, and the
    text is stripped. The function is idempotent.

    A long text is cleaned in blocks cut after a line break that no step
    can reach across, so the result is the same as cleaning it whole, and
    memory stays near the size of the input plus the output.
    """
    blocks = [_clean_block(text[a:b], config) for a, b in _blocks(text)]
    if config.collapse_whitespace:
        blocks[0] = blocks[0].lstrip()
        blocks[-1] = blocks[-1].rstrip()
    return blocks[0] if len(blocks) == 1 else "".join(blocks)


def _safe_start(ch: str) -> bool:
    """Whether a block may start with ``ch`` right after a line break.

    No step changes it or joins it to what comes before: it is not
    whitespace, not dropped, not combining, and stable under normalisation.
    """
    return (
        not ch.isspace()
        and ch.isprintable()
        and not _DROPPED.match(ch)
        and unicodedata.combining(ch) == 0
        and unicodedata.normalize("NFKC", ch) == ch == unicodedata.normalize("NFC", ch)
    )


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    n = len(text)
    start = 0
    while n - start > _BLOCK:
        cut = text.find("\n", start + _BLOCK)
        while cut != -1 and cut + 1 < n and not _safe_start(text[cut + 1]):
            cut = text.find("\n", cut + 1)
        if cut == -1 or cut + 1 >= n:
            break
        yield start, cut + 1
        start = cut + 1
    yield start, n


def _clean_block(text: str, config: CleanConfig) -> str:
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
    return text


# -- split ------------------------------------------------------------------

_HEADING_START = re.compile(r"\n#{1,6}[^\S\n]")  # a section break with its marker: matches never overlap
_HEADING_MARK = 7  # the longest marker after the break: six '#' and a space
_NOT_SPACE = re.compile(r"\S")  # \S is exactly `not str.isspace()` for str patterns
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"'\u2019\u201d)\]]*(?=\s)")
_LAST_SPACE = re.compile(r"[\s\S]*\s")
_WORD_START = re.compile(r"(?<!\S)\S")
_HEADING = re.compile(r"^#{1,6}[^\S\n]+(.+?)[^\S\n]*#*[^\S\n]*$", re.MULTILINE)


class _Positions:
    """The offsets a pattern yields over a text, read lazily and kept only for a sliding window.

    The offsets are exactly those of one ``finditer`` over the whole text;
    they are pulled as a query needs them, and `drop_below` forgets those
    behind the window, so a huge text costs memory for one window only.
    """

    def __init__(self, offsets: Iterator[int]) -> None:
        self._offsets = offsets
        self._seen: list[int] = []
        self._done = False

    def _fill(self, hi: int) -> None:
        seen = self._seen
        while not self._done and (not seen or seen[-1] <= hi):
            nxt = next(self._offsets, None)
            if nxt is None:
                self._done = True
            else:
                seen.append(nxt)

    def drop_below(self, lo: int) -> None:
        """Forget the offsets below ``lo`` (no later query looks there)."""
        i = bisect.bisect_left(self._seen, lo)
        if i:
            del self._seen[:i]

    def last_in(self, lo: int, hi: int) -> int | None:
        """The largest offset p with lo < p <= hi, if any."""
        self._fill(hi)
        seen = self._seen
        i = bisect.bisect_right(seen, hi)
        if i and seen[i - 1] > lo:
            return seen[i - 1]
        return None

    def first_in(self, lo: int, hi: int) -> int | None:
        """The smallest offset p with lo <= p <= hi, if any."""
        self._fill(hi)
        seen = self._seen
        i = bisect.bisect_left(seen, lo)
        if i < len(seen) and seen[i] <= hi:
            return seen[i]
        return None


def _offsets(pattern: re.Pattern[str], text: str, *, at_end: bool) -> Iterator[int]:
    return (m.end() if at_end else m.start() for m in pattern.finditer(text))


def _distinct(offsets: Iterator[int]) -> Iterator[int]:
    last = -1
    for p in offsets:
        if p != last:
            yield p
            last = p


class _Window:
    """Single-character boundaries, found by searching the window a query names.

    Each of these patterns matches exactly one character, so the matches a
    search inside a window finds are those a scan of the whole text finds
    there: nothing needs to be kept between queries.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def last_line(self, lo: int, hi: int) -> int | None:
        """The last line break p with lo < p <= hi."""
        p = self.text.rfind("\n", lo + 1, hi + 1)
        return None if p < 0 else p

    def last_section(self, lo: int, hi: int) -> int | None:
        """The last line break before a Markdown heading, p with lo < p <= hi."""
        # One search in C over the window (and the heading marker just past it),
        # rather than a match at every line break: code has one every few words.
        found = None
        for m in _HEADING_START.finditer(self.text, lo + 1, hi + 1 + _HEADING_MARK):
            if m.start() > hi:
                break
            found = m.start()
        return found

    def last_space(self, lo: int, hi: int) -> int | None:
        """The last whitespace p with lo < p <= hi."""
        m = _LAST_SPACE.match(self.text, lo + 1, hi + 1)
        return None if m is None else m.end() - 1

    def first_word(self, lo: int, hi: int) -> int | None:
        """The first word start p with lo <= p <= hi."""
        m = _WORD_START.search(self.text, lo, hi + 1)
        return None if m is None else m.start()


class _Boundaries:
    """Every candidate cut in a text, by preference, found lazily in order."""

    def __init__(self, text: str) -> None:
        # A cut is where a piece ends; each of these lies on whitespace, so a
        # cut there never splits a word. Paragraph breaks and sentence ends
        # span several characters, so they are read by one scan of the text.
        self.window = _Window(text)
        self.paragraphs = _Positions(_offsets(_PARAGRAPH_BREAK, text, at_end=False))
        self.sentences = _Positions(_offsets(_SENTENCE_END, text, at_end=True))
        # Where a piece may start, for the overlap: a sentence or a word start.
        # Both inputs are ascending and skipping space keeps order, so merging
        # them and dropping repeats gives the sorted set of sentence starts.
        starts = heapq.merge(
            (_skip_space(text, p) for p in _offsets(_SENTENCE_END, text, at_end=True)),
            (_skip_space(text, p) for p in _offsets(_PARAGRAPH_BREAK, text, at_end=False)),
        )
        self.sentence_starts = _Positions(_distinct(starts))

    def advance(self, pos: int) -> None:
        """The next piece starts at ``pos``: forget every offset before it."""
        for positions in (self.paragraphs, self.sentences, self.sentence_starts):
            positions.drop_below(pos)

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
        found = self.window.last_section(quarter, limit)
        if found is not None:
            return found, False
        half = max(start + width // 2, floor)
        found = self.paragraphs.last_in(half, limit)
        if found is not None:
            return found, False
        found = self.sentences.last_in(half, limit)
        if found is None:
            found = self.window.last_line(half, limit)
        if found is not None:
            return found, True
        found = self.window.last_space(max(start, floor), limit)
        return None if found is None else (found, True)

    def restart(self, lo: int, hi: int) -> int | None:
        """The earliest sentence start, else word start, in ``[lo, hi]``."""
        found = self.sentence_starts.first_in(lo, hi)
        return found if found is not None else self.window.first_word(lo, hi)


def _skip_space(text: str, pos: int) -> int:
    if pos >= len(text):
        return pos
    m = _NOT_SPACE.search(text, pos)
    return len(text) if m is None else m.start()


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
    return [Span(start, end, text[start:end]) for start, end in span_bounds(text, size, overlap, min_size)]


def span_bounds(text: str, size: int, overlap: int = 0, min_size: int = 1) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` of each span `split_text` gives, lazily, holding one window of text at a time.

    Raises:
        ValueError: as `split_text` (when iteration starts).
    """
    if size < 1 or overlap < 0 or overlap >= size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    n = len(text)
    bounds = _Boundaries(text)
    pending: tuple[int, int] | None = None

    def keep(start: int, end: int) -> bool:
        return len(text[start:end].strip()) >= min_size

    pos = _skip_space(text, 0)
    # The first non-space after the previous cut: a piece must reach past it,
    # or it would lie inside the previous one.
    floor = pos
    while pos < n:
        bounds.advance(pos)
        end = _trim_end(text, pos, n)
        if end - pos <= size:
            pending = (pos, end)
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
        start = pos
        floor = _skip_space(text, cut)
        pos = floor
        if overlap and overlapping:
            restart = bounds.restart(max(start + 1, cut - overlap), cut)
            if restart is not None and restart < end:
                pos = restart
        if keep(start, end):
            yield start, end
    if pending is not None and keep(*pending):
        yield pending


def section_titles(text: str) -> list[tuple[int, str]]:
    """The Markdown ATX headings of ``text`` as ``(offset, title)``, in order."""
    return [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]


class _Sections:
    """The Markdown heading each offset falls under, for offsets asked mostly in ascending order."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._restart()

    def _restart(self) -> None:
        self._headings = _HEADING.finditer(self._text)
        self._next = next(self._headings, None)
        self._asked = 0
        self.current: str | None = None

    def at(self, pos: int) -> str | None:
        """The title of the last heading starting at or before ``pos``."""
        if pos < self._asked:  # rare: a chunk whose content starts past the next chunk's start
            self._restart()
        self._asked = pos
        while self._next is not None and self._next.start() <= pos:
            self.current = self._next.group(1).strip()
            self._next = next(self._headings, None)
        return self.current


def content_start(text: str, start: int, end: int) -> int:
    """The offset of the first line of ``text[start:end]`` that is neither blank nor a Markdown heading.

    A chunk's section is the heading in force there: a chunk opening with
    a page title and then a subheading sits in the subsection. A chunk of
    headings only sits under its last one (``end - 1``).
    """
    pos = start
    while pos < end:
        newline = text.find("\n", pos, end)
        line_end = end if newline < 0 else newline
        if text[pos:line_end].strip() and not _HEADING.match(text, pos, line_end):
            return pos
        pos = line_end + 1
    return max(start, end - 1)


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


def _per_text(stage: str, ctx: StageContext, each: Callable[[Item, str], Iterable[Item]]) -> Transform:
    """A stage applying ``each(item, text)`` to every item that has text; others become BAD_INPUT."""

    def per_item(item: Item) -> AsyncGen[Item]:
        text = _text_of(item.data)
        if text is None:
            return async_gen_from_results([Err(ctx.fail(item, _not_text(stage, item.data)))])
        return async_gen_from_iterable(each(item, text))

    def transform(upstream: AsyncGen[Item]) -> AsyncGen[Item]:
        # Composed from core's operators, which close the upstream on every exit path.
        return async_gen_and_then(upstream, per_item)

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
    source text) and ``section`` (the Markdown heading its first line of
    content falls under, if any: a chunk opening with a page title and a
    subheading sits in the subsection). Its id is the `stable_id` of the source id, the text, the chunker
    settings and the index, so re-chunking unchanged text gives the same ids.
    A source with no text is reported as filtered.

    Chunks are made one at a time as they are taken downstream: a large text
    costs its spans' offsets and one window, not a list of all its chunks.
    """
    settings = {"size": config.size, "overlap": config.overlap, "min_size": config.min_size}

    def each(item: Item, text: str) -> Iterator[Item]:
        # Offsets first, in a compact array: the count goes into every chunk's meta.
        bounds = array("q")
        for start, end in span_bounds(text, config.size, config.overlap, config.min_size):
            bounds.extend((start, end))
        count = len(bounds) // 2
        if not count:
            ctx.filtered(item, "no text")
            return
        sections = _Sections(text)
        source_id = item.source_id or item.id
        for index in range(count):
            start, end = bounds[2 * index], bounds[2 * index + 1]
            piece = text[start:end]
            meta: dict[str, object] = {
                **item.meta,
                "chunk_index": index,
                "chunk_count": count,
                "start": start,
                "end": end,
            }
            section = sections.at(content_start(text, start, end))
            if section is not None:
                meta["section"] = section
            cid = stable_id({"source_id": source_id, "text": piece, "chunker": settings, "index": index})
            yield Item(cid, piece, meta, source_id)

    return _per_text("text.chunk", ctx, each)
