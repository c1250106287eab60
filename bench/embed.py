"""Throughput of the ``hashing`` embedder: embeddings per second, pure Python.

Embeds N chunk-sized texts twice: cold (a fresh embedder, its word cache
empty) and warm (the same texts again), and prints embeddings/s and MB/s
for each. The texts are the chunks of this repository's README and docs/
(the main job's corpus), cycled up to N; ``--synthetic`` uses sentences of
Zipf-distributed random words instead, a harder case: no stop words and a
long tail of distinct words.

Run it as ``python bench/embed.py --n 5000``; the fastest of ``--repeat``
rounds is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.core import Ok
from funcpipe.stages.config import CleanConfig
from funcpipe.stages.text import clean_text, split_text

SEED = 20240611
VOCABULARY = 30_000
BATCH = 64


@dataclass(frozen=True, slots=True)
class Measurement:
    """One timed pass: how many texts and characters, and how long."""

    texts: int
    chars: int
    seconds: float

    @property
    def rate(self) -> float:
        """Embeddings per second."""
        return self.texts / self.seconds

    @property
    def mb_per_s(self) -> float:
        """Megabytes (of characters) per second."""
        return self.chars / self.seconds / 1e6


REPO = Path(__file__).resolve().parents[1]


def repo_corpus(n: int, chars: int) -> list[str]:
    """``n`` chunks of at most ``chars`` characters of the repository's Markdown, cycled."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    config = CleanConfig()
    chunks = [
        span.text
        for path in paths
        if path.is_file()
        for span in split_text(clean_text(path.read_text(encoding="utf-8"), config), chars, chars // 8)
    ]
    if not chunks:
        raise FileNotFoundError(f"no Markdown under {REPO}: use --synthetic")
    return list(itertools.islice(itertools.cycle(chunks), n))


def synthetic_corpus(n: int, chars: int, seed: int = SEED) -> list[str]:
    """``n`` texts of about ``chars`` characters, in sentences of Zipf-distributed pseudo-words."""
    rnd = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = ["".join(rnd.choices(letters, k=rnd.randint(2, 11))) for _ in range(VOCABULARY)]
    cumulative = list(itertools.accumulate(1.0 / rank for rank in range(1, VOCABULARY + 1)))
    texts = []
    for _ in range(n):
        parts: list[str] = []
        length = 0
        while length < chars:
            sentence = " ".join(rnd.choices(words, cum_weights=cumulative, k=rnd.randint(6, 18))).capitalize() + "."
            parts.append(sentence)
            length += len(sentence) + 1
        texts.append(" ".join(parts)[:chars])
    return texts


async def _embed_all(embedder: HashingEmbedder, texts: Sequence[str]) -> Measurement:
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        res = await embedder.embed_batch(texts[i : i + BATCH])()
        if not isinstance(res, Ok):
            raise RuntimeError(f"embedding failed: {res}")
    return Measurement(len(texts), sum(map(len, texts)), time.perf_counter() - start)


def _best(a: Measurement | None, b: Measurement) -> Measurement:
    return b if a is None or b.seconds < a.seconds else a


async def measure(texts: Sequence[str], dim: int, repeat: int = 3) -> tuple[Measurement, Measurement]:
    """Cold and warm passes over the same texts, through `HashingEmbedder.embed_batch`.

    Each of ``repeat`` rounds embeds the texts with a fresh embedder (cold),
    then again with the same one (warm); the fastest of each kind is kept,
    the one least disturbed by other work on the machine.
    """
    cold: Measurement | None = None
    warm: Measurement | None = None
    for _ in range(repeat):
        embedder = HashingEmbedder(HashingConfig(dim=dim))
        gc.collect()
        cold = _best(cold, await _embed_all(embedder, texts))
        gc.collect()
        warm = _best(warm, await _embed_all(embedder, texts))
    if cold is None or warm is None:
        raise ValueError("repeat must be >= 1")
    return cold, warm


def format_report(corpus: str, texts: Sequence[str], dim: int, cold: Measurement, warm: Measurement) -> str:
    """The lines the bench prints."""
    mean = sum(map(len, texts)) / len(texts)
    return "\n".join(
        [
            f"hashing embedder: {len(texts)} {corpus} texts of {mean:.0f} chars on average, dim {dim}, "
            f"batches of {BATCH}",
            f"cold (empty word cache): {cold.rate:,.0f} embeddings/s ({cold.mb_per_s:.2f} MB/s)",
            f"warm (cached words): {warm.rate:,.0f} embeddings/s ({warm.mb_per_s:.2f} MB/s)",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the bench and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5000, help="texts to embed")
    parser.add_argument("--chars", type=int, default=800, help="characters per text (a chunk's size)")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the fastest pass of each kind is kept")
    parser.add_argument("--synthetic", action="store_true", help="Zipf-distributed random words, not the docs")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeat < 1 or args.chars < 16 or args.dim < 8:
        parser.error("--n and --repeat must be >= 1, --chars >= 16 and --dim >= 8")
    if args.synthetic:
        corpus, texts = "synthetic", synthetic_corpus(args.n, args.chars)
    else:
        corpus, texts = "README/docs", repo_corpus(args.n, args.chars)
    cold, warm = asyncio.run(measure(texts, args.dim, args.repeat))
    print(format_report(corpus, texts, args.dim, cold, warm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
