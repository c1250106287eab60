"""Keyword ranking and rank fusion shared by the vector stores.

`keyword_terms` is the in-process stand-in for PostgreSQL's ``english`` text
search configuration: word tokens, case-folded, English stop words dropped,
lightly stemmed. `bm25` ranks texts by those terms (Okapi BM25, the ranking
pgvector's keyword mode computes in SQL), and `rrf` fuses rankings by
reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009): a record's
fused score is the sum over the rankings that hold it of ``1 / (k + rank)``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from funcpipe.adapters.hashing import STOP_WORDS, stem

RRF_K = 60
"""The rank constant of reciprocal rank fusion: the value its authors found best across collections."""

BM25_K1 = 1.2
"""How fast a term's repetitions stop adding to a text's score."""

BM25_B = 0.75
"""How much a long text's score is discounted for its length."""

_WORD = re.compile(r"\w+")


def keyword_terms(text: str) -> list[str]:
    """The search terms of ``text``, in order: case-folded, stemmed word tokens, stop words dropped."""
    return [stem(w) for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS]


def fusion_depth(top_k: int) -> int:
    """How many candidates each ranking contributes to a fusion answering ``top_k``."""
    return min(1000, max(50, 4 * top_k))


def bm25(
    query: Iterable[str],
    docs: Mapping[str, Counter[str]],
    *,
    candidates: Iterable[str] | None = None,
    k1: float = BM25_K1,
    b: float = BM25_B,
) -> dict[str, float]:
    """The BM25 score of each candidate that holds at least one ``query`` term.

    Args:
        query: the query's terms (repeats count once).
        docs: every document's term counts, by id: the collection the
            statistics (document frequency, mean length) come from.
        candidates: the ids to score (default: all of ``docs``).
        k1: term-frequency saturation.
        b: length normalisation.

    Returns:
        ``{id: score}`` for the candidates matching a term; scores are positive.
        A text's length is its number of distinct terms (as PostgreSQL's
        ``length(tsvector)``, which pgvector's ranking uses).
    """
    terms = set(query)
    if not terms or not docs:
        return {}
    n = len(docs)
    avgdl = math.fsum(len(c) for c in docs.values()) / n
    df = {t: sum(1 for c in docs.values() if t in c) for t in terms}
    idf = {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items() if d}
    scores: dict[str, float] = {}
    for rid in docs if candidates is None else candidates:
        counts = docs[rid]
        length = len(counts)
        parts = []
        for t, weight in idf.items():
            tf = counts.get(t, 0)
            if tf:
                norm = 1.0 - b + b * (length / avgdl if avgdl else 0.0)
                parts.append(weight * tf * (k1 + 1.0) / (tf + k1 * norm))
        if parts:
            scores[rid] = math.fsum(sorted(parts))
    return scores


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ``rankings`` (ids, best first): ``(id, score)``, best first.

    A record's score is the sum of ``1 / (k + rank)`` (ranks from 1) over
    the rankings that hold it; a repeated id counts at its best rank. The
    result does not depend on the order of ``rankings``: sums are exact
    (`math.fsum` of sorted terms) and ties are broken by id.
    """
    if k < 0:
        raise ValueError(f"the rank constant k must be >= 0, got {k}")
    parts: dict[str, list[float]] = {}
    for ranking in rankings:
        seen: set[str] = set()
        for rank, rid in enumerate(ranking, start=1):
            if rid in seen:
                continue
            seen.add(rid)
            parts.setdefault(rid, []).append(1.0 / (k + rank))
    fused = [(rid, math.fsum(sorted(p))) for rid, p in parts.items()]
    fused.sort(key=lambda pair: (-pair[1], pair[0]))
    return fused
