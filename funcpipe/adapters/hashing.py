"""The ``hashing`` embedder: local, deterministic feature hashing, no model and no network.

A text becomes a bag of features: its content words (lightly stemmed, so
``embeddings``, ``embedding`` and ``embedded`` are one feature), the bigrams
of consecutive content words, and each content word's character n-grams
(``<word>`` padded, so prefixes and suffixes count). Every feature is hashed
with CRC-32 (stable across processes and platforms, unlike the salted
built-in ``hash()``) to a signed coordinate, weighted by ``1 + log(tf)`` and
the vector is L2-normalised, so the dot product of two vectors is their
cosine similarity. Word features carry the topic; character n-grams let
``embedder`` meet ``embedding`` and absorb typos.

A small English stop-word list keeps function words from dominating short
questions. The output depends only on the text and the config, never on
``purpose`` or on the order of a batch.
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from collections.abc import Sequence

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.ports import Embedding, Fingerprint, Purpose

VERSION = "v1"
"""Bumped whenever the features or weights change, so stored vectors are not mixed."""

MAX_BATCH = 4096
WORD_WEIGHT = 1.0
BIGRAM_WEIGHT = 0.8
CHAR_WEIGHT = 0.8
"""Weight of a word's character n-grams taken together, relative to the word itself."""

_TOKEN = re.compile(r"\w+")
_CACHE_LIMIT = 200_000
# Yield to the event loop between texts this often, so a large batch does not
# stall timers, progress and I/O of other stages for long.
_YIELD_EVERY = 64

_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves s t d ll m re ve
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())
"""English function words: left out, so that they do not dominate short questions."""

_Features = tuple[tuple[int, float], ...]
_Entry = tuple[bytes, _Features]
"""A word's UTF-8 bytes and its hashed features (the word and its character n-grams)."""


def _seed(namespace: str) -> int:
    return zlib.crc32(namespace.encode("utf-8"))


_WORD_SEED = _seed("word")
_BIGRAM_SEED = _seed("bigram")
_CHAR_SEED = _seed("char")
_SEPARATOR = _seed("|")


class HashingEmbedder:
    """An `EmbedPort` computing feature-hashing vectors in process.

    Args:
        config: dimension and n-gram ranges.
    """

    def __init__(self, config: HashingConfig) -> None:
        lo, hi = config.char_ngrams
        self._config = config
        self._dim = config.dim
        self._char_sizes = tuple(range(lo, hi + 1))
        self._word_ngrams = config.word_ngrams
        self._fingerprint = Fingerprint("hashing", f"{VERSION}-c{lo}-{hi}-w{config.word_ngrams}", config.dim)
        # Words follow Zipf's law: caching each word's hashed features makes
        # most of the work of a large corpus a dictionary lookup.
        self._token_cache: dict[str, _Entry] = {}

    @property
    def fingerprint(self) -> Fingerprint:
        """``hashing:v1-c<lo>-<hi>-w<n>:<dim>``."""
        return self._fingerprint

    @property
    def max_batch(self) -> int:
        """Texts per call at most; the embedder is local, so this only bounds latency."""
        return MAX_BATCH

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts``; a non-string entry is ``Err(BAD_INPUT)``. ``purpose`` changes nothing."""
        batch = list(texts)

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            out: list[Result[Embedding, ErrInfo]] = []
            for n, text in enumerate(batch, start=1):
                if isinstance(text, str):
                    out.append(Ok(self.embed_text(text)))
                else:
                    out.append(Err(ErrInfo(ErrCode.BAD_INPUT, f"hashing embeds text, got {type(text).__name__}")))
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            return Ok(out)

        return run

    def embed_text(self, text: str) -> list[float]:
        """The L2-normalised vector of one text (all zeros if it has no content word)."""
        cache = self._token_cache
        encoded: list[bytes] = []
        seen: dict[str, _Entry] = {}
        counts: dict[str, int] = {}
        for word in _TOKEN.findall(text.casefold()):
            if word in STOP_WORDS:
                continue
            entry = seen.get(word)
            if entry is None:
                entry = cache.get(word)
                if entry is None:
                    entry = self._word_entry(word)
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[word] = entry
                seen[word] = entry
                counts[word] = 1
            else:
                counts[word] += 1
            encoded.append(entry[0])
        vec = [0.0] * self._dim
        for word, tf in counts.items():
            feats = seen[word][1]
            if tf == 1:
                for index, value in feats:
                    vec[index] += value
            else:
                weight = 1.0 + math.log(tf)
                for index, value in feats:
                    vec[index] += weight * value
        for n in range(2, self._word_ngrams + 1):
            self._add_phrases(vec, encoded, n)
        norm = math.hypot(*vec)
        if norm == 0.0:
            return vec
        inv = 1.0 / norm
        return [x * inv for x in vec]

    def _add_phrases(self, vec: list[float], words: Sequence[bytes], n: int) -> None:
        # CRC-32 continued over the phrase's words: the word bytes are already
        # encoded, so a phrase costs one C call per word and no string joins.
        counts: dict[int, int] = {}
        for i in range(len(words) - n + 1):
            h = _BIGRAM_SEED
            for j in range(i, i + n):
                h = zlib.crc32(words[j], h ^ _SEPARATOR)
            counts[h] = counts.get(h, 0) + 1
        dim = self._dim
        for h, tf in counts.items():
            weight = BIGRAM_WEIGHT if tf == 1 else BIGRAM_WEIGHT * (1.0 + math.log(tf))
            vec[h % dim] += weight if h & 0x80000000 else -weight

    def _word_entry(self, word: str) -> _Entry:
        dim = self._dim
        acc: dict[int, float] = {}
        raw = stem(word).encode("utf-8")
        h = zlib.crc32(raw, _WORD_SEED)
        acc[h % dim] = WORD_WEIGHT if h & 0x80000000 else -WORD_WEIGHT
        padded = f"<{word}>"
        grams = [padded[i : i + n] for n in self._char_sizes for i in range(len(padded) - n + 1)]
        if grams:
            # Scaled so that a word's n-grams together weigh CHAR_WEIGHT (in L2),
            # whatever the word's length.
            each = CHAR_WEIGHT / math.sqrt(len(grams))
            for gram in grams:
                g = zlib.crc32(gram.encode("utf-8"), _CHAR_SEED)
                index = g % dim
                acc[index] = acc.get(index, 0.0) + (each if g & 0x80000000 else -each)
        return raw, tuple(acc.items())


_VOWEL = re.compile(r"[aeiouy]")
_UNDOUBLED = frozenset("lsz")
# Each suffix with the shortest root it may leave, so "embed" keeps its -ed.
_SUFFIXES = (("ing", 3), ("ed", 4), ("er", 4), ("ly", 4))


def stem(word: str) -> str:
    """A light English suffix stripper: plurals, then -ing, -ed, -er, -ly, then a final e.

    Words that are not purely alphabetic (identifiers, numbers) are kept
    as they are. It only has to be consistent, not linguistically right:
    a document and a question go through the same function.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and word[-2] not in "su":
        word = word[:-1]
    for suffix, shortest in _SUFFIXES:
        if word.endswith(suffix):
            root = word[: -len(suffix)]
            if len(root) >= shortest and _VOWEL.search(root):
                word = root
                if word[-1] == word[-2] and word[-1] not in _UNDOUBLED and not _VOWEL.match(word[-1]):
                    word = word[:-1]
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def create(config: HashingConfig, resources: Resources) -> HashingEmbedder:
    """The adapter factory: a `HashingEmbedder` (it needs no resources)."""
    return HashingEmbedder(config)
