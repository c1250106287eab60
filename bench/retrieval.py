"""Retrieval quality: recall@5 and MRR@5 of each retrieval mode, on a corpus the project did not write.

The corpus is the top-level modules of the running Python's standard library
(``sysconfig.get_paths()["stdlib"]/*.py``, about 170 files), cleaned and
chunked as the main job does (``text.clean``, chunks of 800 characters with
100 of overlap). Each labelled question says what one module does without
naming it; it is answered when a chunk of that module is among the first 5
hits, and its reciprocal rank is 1 / the rank of the first such chunk (0
past 5). Rows, all in the same run over the same chunks:

- ``hashing`` vector search (the former default embedder, 384 dimensions);
- ``wordllama`` vector search (the local semantic model, 256 dimensions);
- keyword search (BM25);
- hybrid: the vector and keyword rankings fused by reciprocal rank fusion,
  with the literature's rank constant k=60, and with the main job's k=5.

Each mode runs on ``pgvector`` (an embedded server, exact scan) as the main
job uses it, and with ``--memory`` on the ``memory`` store too (pure
Python, so minutes rather than seconds). It
also prints the local model's chunks/s, and the best-hit scores of answered
questions against those of off-topic questions the corpus cannot answer:
the figures behind `funcpipe query`'s weak-match notice.

Run it as ``python bench/retrieval.py`` (about a minute on 2 idle cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from funcpipe.adapters.config import HashingConfig, PgvectorConfig, WordLlamaConfig
from funcpipe.adapters.hashing import HashingEmbedder
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.adapters.wordllama import WordLlamaEmbedder
from funcpipe.core import Ok
from funcpipe.ports import EmbedPort, QueryHit, RetrievalMode, VectorRecord, VectorStorePort
from funcpipe.run.query import WEAK_COSINE, WEAK_COVERAGE, term_coverage, weak_match
from funcpipe.stages.config import CleanConfig
from funcpipe.stages.text import clean_text, split_text

TOP_K = 5
MAIN_JOB_RRF_K = 5
"""The main job's ``rrf_k`` (pipelines/rag.yaml)."""
CHUNK_SIZE, CHUNK_OVERLAP = 800, 100

QUESTIONS: tuple[tuple[str, str], ...] = (
    ("bisect", "keep a list sorted while inserting new elements"),
    ("heapq", "a priority queue where the smallest item is always popped first"),
    ("difflib", "compare two sequences of lines and show the changes as a unified diff"),
    ("shutil", "copy a whole directory tree, and remove one recursively"),
    ("tempfile", "create a temporary file that is deleted automatically when it is closed"),
    ("textwrap", "wrap a long paragraph so that no line is wider than a given width"),
    ("fnmatch", "match filenames against shell-style wildcard patterns"),
    ("csv", "read and write comma separated values from spreadsheets"),
    ("argparse", "parse command-line options and arguments and generate help messages"),
    ("getpass", "prompt the user for a password without echoing it on the terminal"),
    ("secrets", "generate cryptographically strong random tokens for password resets"),
    ("uuid", "make a random 128-bit identifier, version 4, for a record"),
    ("hmac", "sign a message with a keyed hash so that tampering can be detected"),
    ("base64", "encode binary data as ASCII text with a 64-character alphabet"),
    ("gzip", "compress and decompress single files in the GNU zip format"),
    ("zipfile", "open a .zip archive, list its members and extract them"),
    ("tarfile", "read and write tape archives, optionally compressed with bzip2"),
    ("statistics", "compute the mean, median and standard deviation of numeric data"),
    ("fractions", "exact rational number arithmetic with a numerator and denominator"),
    ("random", "shuffle a list and pick a random sample of its elements"),
    ("calendar", "which weekday a date falls on, and whether a year is a leap year"),
    ("sched", "run events at planned times with priorities, a general purpose event scheduler"),
    ("queue", "a synchronized FIFO for passing work between producer and consumer threads"),
    ("threading", "start threads and coordinate them with locks, events and condition variables"),
    ("subprocess", "spawn a new process, connect to its pipes and get its return code"),
    ("signal", "set handlers for asynchronous events such as SIGINT delivered to the process"),
    ("selectors", "wait until one of several file objects is ready for I/O"),
    ("smtplib", "send an email through a mail server"),
    ("ftplib", "upload and download files to a file transfer protocol server"),
    ("webbrowser", "display a web page to the user by launching their browser"),
    ("pickle", "serialize Python objects to a byte stream and restore them later"),
    ("shelve", "a persistent dictionary backed by a database file that stores arbitrary objects"),
    ("copy", "make a deep copy of a nested object"),
    ("pprint", "print nested data structures readably, with line breaks and indentation"),
    ("enum", "define a set of named symbolic constants"),
    ("dataclasses", "generate __init__ and __repr__ automatically for classes with typed fields"),
    ("functools", "cache the results of a function and create partial functions"),
    ("contextlib", "write a with-statement context manager from a generator function"),
    ("inspect", "get the source code and the signature of a live function object"),
    ("traceback", "format and print the stack trace of an exception"),
    ("timeit", "measure the execution time of small code snippets"),
    ("tokenize", "split Python source code into tokens"),
    ("gettext", "translate the messages of a program into other languages"),
    ("mimetypes", "guess the content type of a file from its extension"),
    ("ipaddress", "check whether an IPv4 address belongs to a network"),
    ("shlex", "split a command line string the way a Unix shell would, honouring quotes"),
    ("tracemalloc", "find which lines of code allocate the most memory"),
    ("pdb", "an interactive debugger: set breakpoints and step through code"),
    ("colorsys", "convert colours between RGB and HSV"),
    ("configparser", "read INI configuration files with sections and keys"),
    ("filecmp", "compare two directories to see which files differ"),
    ("hashlib", "compute SHA-256 and MD5 digests of data"),
    ("graphlib", "order the nodes of a graph so that each comes after its dependencies"),
    ("weakref", "references to objects that do not keep them alive"),
)
"""(module, question): the question describes the module without naming it."""

OFF_TOPIC: tuple[str, ...] = (
    "a recipe for chocolate cake with strawberries",
    "who won the football world cup in 1998",
    "how tall is mount everest",
    "the best beaches to visit in portugal in summer",
    "symptoms of the flu in toddlers",
    "what is the capital of australia",
    "how do plants turn sunlight into sugar",
    "train tickets from paris to berlin",
)
"""Questions the corpus cannot answer: their best scores should read as weak."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of the corpus: its module and text."""

    module: str
    text: str


@dataclass(frozen=True, slots=True)
class Row:
    """One retrieval setting's figures."""

    label: str
    recall: float
    mrr: float
    answered: list[float]
    off_topic: list[float]
    weak_answered: int
    weak_off_topic: int
    coverage: list[float]
    off_coverage: list[float]


def corpus(stdlib: Path) -> list[Chunk]:
    """The chunks of the top-level modules of ``stdlib``, as the main job makes them."""
    chunks: list[Chunk] = []
    for path in sorted(stdlib.glob("*.py")):
        text = clean_text(path.read_text(encoding="utf-8", errors="replace"), CleanConfig())
        for span in split_text(text, CHUNK_SIZE, CHUNK_OVERLAP):
            chunks.append(Chunk(path.stem, text[span.start : span.end]))
    return chunks


async def vectors(embedder: EmbedPort, texts: Sequence[str], purpose: str = "document") -> list[list[float]]:
    """The embeddings of ``texts``, in batches of the embedder's size."""
    out: list[list[float]] = []
    size = min(embedder.max_batch, 256)
    for i in range(0, len(texts), size):
        res = await embedder.embed_batch(texts[i : i + size], purpose)()  # type: ignore[arg-type]
        assert isinstance(res, Ok), res
        for r in res.value:
            assert isinstance(r, Ok), r
            out.append([float(x) for x in r.value])
    return out


async def fill(store: VectorStorePort, embedder: EmbedPort, chunks: Sequence[Chunk], vecs: list[list[float]]) -> None:
    """``store`` prepared for ``embedder`` and holding every chunk with its vector."""
    assert isinstance(await store.ensure(embedder.fingerprint)(), Ok)
    records = [
        VectorRecord(f"c{i}", c.module, c.text, v, {"module": c.module}, "bench/load")
        for i, (c, v) in enumerate(zip(chunks, vecs, strict=True))
    ]
    for i in range(0, len(records), 1000):
        assert isinstance(await store.upsert(records[i : i + 1000])(), Ok)


async def ask(
    store: VectorStorePort, embedder: EmbedPort, questions: Sequence[str], mode: RetrievalMode
) -> list[list[QueryHit]]:
    """Each question's first `TOP_K` hits."""
    qvecs = await vectors(embedder, questions, "query")
    out = []
    for q, v in zip(questions, qvecs, strict=True):
        res = await store.query(v, TOP_K, text=q, mode=mode)()
        assert isinstance(res, Ok), res
        out.append(res.value)
    return out


async def evaluate(label: str, store: VectorStorePort, embedder: EmbedPort, mode: RetrievalMode) -> Row:
    """Recall@5, MRR@5 and best scores of ``mode`` on ``store``."""
    answers = await ask(store, embedder, [q for _, q in QUESTIONS], mode)
    hits_off = await ask(store, embedder, OFF_TOPIC, mode)
    found, ranks, answered, coverage = 0, [], [], []
    weak_answered = 0
    kind = embedder.fingerprint.kind
    for (module, question), hits in zip(QUESTIONS, answers, strict=True):
        rank = next((i for i, h in enumerate(hits, start=1) if h.source_id == module), None)
        ranks.append(1.0 / rank if rank else 0.0)
        if rank:
            found += 1
            answered.append(hits[0].score)
            weak_answered += weak_match(question, hits, mode, kind) is not None
            coverage.append(max(term_coverage(question, h.text) for h in hits))
    weak_off = sum(weak_match(q, hits, mode, kind) is not None for q, hits in zip(OFF_TOPIC, hits_off, strict=True))
    off_coverage = [
        max((term_coverage(q, h.text) for h in hits), default=0.0) for q, hits in zip(OFF_TOPIC, hits_off, strict=True)
    ]
    return Row(
        label,
        found / len(QUESTIONS),
        statistics.fmean(ranks),
        answered,
        [hs[0].score if hs else 0.0 for hs in hits_off],
        weak_answered,
        weak_off,
        coverage,
        off_coverage,
    )


async def main(args: argparse.Namespace) -> None:
    chunks = corpus(Path(args.stdlib))
    texts = [c.text for c in chunks]
    print(f"corpus: {len({c.module for c in chunks})} modules, {len(chunks)} chunks; {len(QUESTIONS)} questions")

    hashing = HashingEmbedder(HashingConfig(dim=384))
    wordllama = WordLlamaEmbedder(WordLlamaConfig())
    await vectors(wordllama, texts[:10])  # the model loads once, outside the timing
    started, cpu = time.perf_counter(), time.process_time()
    wl_vecs = await vectors(wordllama, texts)
    wl_seconds, wl_cpu = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    hashing_vecs = await vectors(hashing, texts)
    hashing_seconds = time.perf_counter() - started
    print(
        f"embedding: wordllama {len(texts) / wl_seconds:,.0f} chunks/s "
        f"({len(texts) / wl_cpu:,.0f} per CPU-second, all threads), "
        f"hashing {len(texts) / hashing_seconds:,.0f} chunks/s (same chunks, same run)"
    )

    settings: list[tuple[str, EmbedPort, list[list[float]], RetrievalMode]] = [
        ("hashing, vector", hashing, hashing_vecs, "vector"),
        ("wordllama, vector", wordllama, wl_vecs, "vector"),
        ("keyword (BM25)", wordllama, wl_vecs, "keyword"),
        ("hybrid: hashing + BM25, RRF k=60", hashing, hashing_vecs, "hybrid"),
        ("hybrid: wordllama + BM25, RRF k=60", wordllama, wl_vecs, "hybrid"),
        (f"hybrid: wordllama + BM25, RRF k={MAIN_JOB_RRF_K} (the main job)", wordllama, wl_vecs, "hybrid"),
    ]
    rows = [] if args.no_pgvector else await on_pgvector(chunks, settings)
    if args.memory:
        for label, embedder, vecs, mode in settings:
            store = MemoryStore(rrf_k=MAIN_JOB_RRF_K if "main job" in label else 60)
            await fill(store, embedder, chunks, vecs)
            rows.append(await evaluate(f"memory {label}", store, embedder, mode))

    print(f"\n| store and retrieval | recall@{TOP_K} | MRR@{TOP_K} | weak notices: answered / off-topic |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.label} | {r.recall:.2f} | {r.mrr:.2f} | "
            f"{r.weak_answered}/{len(r.answered)} / {r.weak_off_topic}/{len(OFF_TOPIC)} |"
        )
    print(f"\nbest-hit scores (answered: min / median; off-topic: median / max); weak below {dict(WEAK_COSINE)}")
    for r in rows:
        if r.answered:
            print(
                f"  {r.label:45} answered {min(r.answered):.3f} / {statistics.median(r.answered):.3f}; "
                f"off-topic {statistics.median(r.off_topic):.3f} / {max(r.off_topic):.3f}"
            )
    if not rows:
        return
    r = rows[-1]
    print(
        f"share of the question's terms in the best of the top {TOP_K} (weak below {WEAK_COVERAGE}): answered, "
        f"lowest {sorted(round(c, 2) for c in r.coverage)[:3]}; off-topic {sorted(round(c, 2) for c in r.off_coverage)}"
    )


async def on_pgvector(
    chunks: Sequence[Chunk], settings: Sequence[tuple[str, EmbedPort, list[list[float]], RetrievalMode]]
) -> list[Row]:
    """The same settings on pgvector (an embedded server in a temporary directory, exact scan)."""
    from funcpipe.run.resources import RunResources

    rows = []
    with tempfile.TemporaryDirectory(prefix="funcpipe-bench-") as tmp:
        async with RunResources(Path(tmp)) as resources:
            filled: set[str] = set()
            for label, embedder, vecs, mode in settings:
                name = embedder.fingerprint.kind
                k = MAIN_JOB_RRF_K if "main job" in label else 60
                store = PgvectorStore(PgvectorConfig(table=f"bench_{name}", exact=True, rrf_k=k), resources)
                if name not in filled:
                    filled.add(name)
                    await fill(store, embedder, chunks, vecs)
                rows.append(await evaluate(f"pgvector {label}", store, embedder, mode))
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: where the standard library is, and whether to include pgvector."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="the corpus directory")
    parser.add_argument("--memory", action="store_true", help="also on the memory store (slow)")
    parser.add_argument("--no-pgvector", action="store_true", help="without pgvector (with --memory: memory only)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
