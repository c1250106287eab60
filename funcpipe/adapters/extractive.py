"""The ``extractive`` generate adapter: an offline answer made of the best passages, with sources.

No model is called. The answer quotes up to ``max_passages`` retrieved
passages, best first, each numbered and followed by its source and score.
A passage longer than ``max_chars`` is cut down to the run of whole
sentences that mentions the question's words most (a word cut only when a
single sentence is too long), marked with ``…`` where text was left out.
Overlapping chunks of one source are quoted once. The rendered prompt is
kept in ``meta`` so that ``--json`` shows what a model would have been sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from funcpipe.adapters.config import ExtractiveConfig
from funcpipe.adapters.hashing import STOP_WORDS, stem
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, ErrInfo, Ok, Result
from funcpipe.ports import Generation, QueryHit

ELLIPSIS = "…"
NO_MATCH = "No indexed passage matches the question: run the ingest pipeline first, or rephrase the question."

_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r".+?(?:[.!?](?=\s)|\n\s*\n|$)", re.DOTALL)


def _terms(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS}


def _sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence or paragraph, whitespace excluded."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _cut_words(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > 0 else limit].rstrip()


def trim_passage(text: str, max_chars: int, question: str = "") -> str:
    """``text`` cut to at most ``max_chars`` characters (plus ``…`` marks) around the question's words.

    The kept part is the run of whole sentences, fitting in ``max_chars``,
    with the most occurrences of the question's content words (the
    earliest such run on a tie). If even its first sentence is too long,
    that sentence is cut at a word boundary.
    """
    text = text.strip()
    if len(text) <= max_chars:
        return text
    wanted = _terms(question)
    spans = _sentences(text)
    weights = [sum(1 for w in _WORD.findall(text[s:e].casefold()) if stem(w) in wanted) for s, e in spans]
    best: tuple[int, int, int] | None = None  # (weight, first, last)
    for i, (start, _end) in enumerate(spans):
        weight, j = 0, i
        while j < len(spans) and spans[j][1] - start <= max_chars:
            weight += weights[j]
            j += 1
        last = max(i, j - 1)
        if best is None or weight > best[0]:
            best = (weight, i, last)
    assert best is not None
    _, first, last = best
    start, end = spans[first][0], spans[last][1]
    body = _cut_words(text[start:end], max_chars)
    end = start + len(body)
    return (ELLIPSIS if start > 0 else "") + body + (ELLIPSIS if end < len(text) else "")


def source_label(hit: QueryHit) -> str:
    """Where a passage comes from: its path (or source, url, title) and section, else its source id."""
    meta = hit.meta
    where = next((str(meta[k]) for k in ("path", "source", "url", "title") if meta.get(k)), None)
    label = where or f"source {hit.source_id[:12]}"
    section = meta.get("section")
    return f"{label} § {section}" if section else label


def _span(hit: QueryHit) -> tuple[int, int] | None:
    start, end = hit.meta.get("start"), hit.meta.get("end")
    return (start, end) if isinstance(start, int) and isinstance(end, int) else None


def _overlaps(hit: QueryHit, chosen: Sequence[QueryHit]) -> bool:
    """True if ``hit`` repeats a chosen passage: the same text, or an overlapping span of one source."""
    span = _span(hit)
    for c in chosen:
        if c.text.strip() == hit.text.strip():
            return True
        other = _span(c)
        if c.source_id == hit.source_id and span and other and span[0] < other[1] and other[0] < span[1]:
            return True
    return False


def select_passages(hits: Sequence[QueryHit], max_passages: int) -> list[QueryHit]:
    """The first ``max_passages`` hits, in order, leaving out those that repeat an earlier one."""
    chosen: list[QueryHit] = []
    for hit in hits:
        if len(chosen) == max_passages:
            break
        if not _overlaps(hit, chosen):
            chosen.append(hit)
    return chosen


def _passage_json(hit: QueryHit, text: str) -> dict[str, object]:
    meta: Mapping[str, object] = hit.meta
    return {"id": hit.id, "source_id": hit.source_id, "score": hit.score, "text": text, "meta": dict(meta)}


class ExtractiveGenerator:
    """A `GeneratePort` that answers with the retrieved passages themselves.

    Args:
        config: how many passages, and how long each may be.
    """

    def __init__(self, config: ExtractiveConfig) -> None:
        self._config = config

    def generate(self, prompt: str, *, question: str, hits: Sequence[QueryHit]) -> AsyncPlan[Generation]:
        """Quote the best passages of ``hits`` (best first), numbered, with their sources and scores."""
        chosen = select_passages(hits, self._config.max_passages)
        texts = [trim_passage(h.text, self._config.max_chars, question) for h in chosen]
        if chosen:
            blocks = [
                f"[{n}] {source_label(h)} (score {h.score:.3f})\n{text}"
                for n, (h, text) in enumerate(zip(chosen, texts, strict=True), start=1)
            ]
            answer = "From the indexed documents, best match first:\n\n" + "\n\n".join(blocks)
        else:
            answer = NO_MATCH
        generation = Generation(
            text=answer,
            meta={
                "passages": [_passage_json(h, t) for h, t in zip(chosen, texts, strict=True)],
                "prompt": prompt,
            },
        )

        async def run() -> Result[Generation, ErrInfo]:
            return Ok(generation)

        return run


def create(config: ExtractiveConfig, resources: Resources) -> ExtractiveGenerator:
    """The adapter factory: an `ExtractiveGenerator` (it needs no resources)."""
    return ExtractiveGenerator(config)
