"""Tests of funcpipe.adapters.hashing: the local feature-hashing embedder."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funcpipe.adapters.config import HashingConfig
from funcpipe.adapters.hashing import HashingEmbedder, create, stem
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.ports import EmbedPort, Fingerprint
from funcpipe.stages.config import CleanConfig
from funcpipe.stages.text import clean_text, split_text

FAST = settings(max_examples=100, derandomize=True, deadline=None)


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _embedder(**kw: object) -> HashingEmbedder:
    return HashingEmbedder(HashingConfig.model_validate(kw))


def test_create_gives_an_embed_port() -> None:
    assert isinstance(create(HashingConfig(), resources=None), EmbedPort)  # type: ignore[arg-type]


def test_fingerprint_names_version_ngrams_and_dim() -> None:
    e = _embedder(dim=256, char_ngrams=(2, 4), word_ngrams=1)
    assert e.fingerprint == Fingerprint("hashing", "v1-c2-4-w1", 256)


def test_vectors_have_the_configured_dimension() -> None:
    assert len(_embedder(dim=64).embed_text("some words")) == 64


@FAST
@given(st.text(max_size=200))
def test_vectors_are_unit_length_or_zero(text: str) -> None:
    vec = _embedder(dim=64).embed_text(text)
    norm = math.sqrt(sum(x * x for x in vec))
    assert norm == pytest.approx(1.0) or norm == 0.0


def test_text_without_content_words_embeds_to_zero() -> None:
    assert set(_embedder(dim=32).embed_text("the of and ...")) == {0.0}


@FAST
@given(st.text(max_size=200))
def test_embedding_is_deterministic_across_instances(text: str) -> None:
    assert _embedder().embed_text(text) == _embedder().embed_text(text)


def test_embedding_is_stable_across_processes() -> None:
    # The salted built-in hash() would differ between these two interpreters.
    code = (
        "import json; from funcpipe.adapters.hashing import HashingEmbedder; "
        "from funcpipe.adapters.config import HashingConfig; "
        "print(json.dumps(HashingEmbedder(HashingConfig(dim=16)).embed_text('stable hashing of words')))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


PINNED_V1 = "d0e66a2b3a8e62e23096c609d62c145b5c65cd5744989924f52e38e9ebe66844"


def test_output_matches_the_pinned_v1_vectors() -> None:
    # A change here changes every stored vector: bump hashing.VERSION with it.
    vec = _embedder(dim=384).embed_text("How do I switch the embedding provider? Change one line.")
    digest = hashlib.sha256(json.dumps([round(x, 6) for x in vec]).encode()).hexdigest()
    assert digest == PINNED_V1


async def test_embed_batch_keeps_order_and_ignores_purpose() -> None:
    e = _embedder()
    texts = ["first text", "second text", "third"]
    docs = await e.embed_batch(texts, "document")()
    queries = await e.embed_batch(list(reversed(texts)), "query")()
    assert isinstance(docs, Ok)
    assert isinstance(queries, Ok)
    assert docs.value == list(reversed(queries.value))
    assert docs.value[0] == Ok(e.embed_text("first text"))


async def test_embed_batch_fails_a_non_text_entry_alone() -> None:
    res = await _embedder().embed_batch(["fine", 3])()  # type: ignore[list-item]
    assert isinstance(res, Ok)
    ok, bad = res.value
    assert isinstance(ok, Ok)
    assert isinstance(bad, Err)
    assert bad.error.code == ErrCode.BAD_INPUT


async def test_embed_batch_plan_is_replayable() -> None:
    plan = _embedder().embed_batch(["again"])
    assert await plan() == await plan()


def test_char_ngrams_must_be_a_range() -> None:
    with pytest.raises(ValueError, match="char_ngrams"):
        _embedder(char_ngrams=(5, 3))


def test_inflections_are_closer_than_unrelated_words() -> None:
    e = _embedder()
    base = e.embed_text("embedding")
    assert _cos(base, e.embed_text("embeddings")) > 0.5
    assert _cos(base, e.embed_text("embedder")) > _cos(base, e.embed_text("breaker"))


def test_stem_folds_common_inflections() -> None:
    assert {stem(w) for w in ("embed", "embeds", "embedding", "embeddings", "embedded", "embedder")} == {"embed"}
    assert {stem(w) for w in ("retry", "retries", "retried")} == {"retry"}


def test_stem_keeps_identifiers_and_short_words() -> None:
    assert [stem(w) for w in ("api_key_env", "v1", "use", "speed")] == ["api_key_env", "v1", "use", "speed"]


def test_word_order_matters_through_bigrams() -> None:
    e = _embedder()
    assert _cos(e.embed_text("rate limit"), e.embed_text("limit rate")) < 0.999
    assert _embedder(word_ngrams=1).embed_text("rate limit") == _embedder(word_ngrams=1).embed_text("limit rate")


GUIDE = """
# funcpipe

Declarative async pipelines for flaky external services. Declare stages, adapters and policies in
YAML; funcpipe compiles them into a pure description and a separate runner drives it.

## Installation

Install funcpipe with pip into a virtual environment. Python 3.11 or newer is required. The package
brings an embedded PostgreSQL server with pgvector, so no database has to be installed.

## Quick start

Run the main job with `funcpipe run pipelines/rag.yaml`. It loads the documents, cleans and chunks
them, embeds every chunk and upserts the vectors into the store. Then ask a question with
`funcpipe query pipelines/rag.yaml "question"`.

## Switching the embedding provider

Embeddings come from the adapter named by the embed stage. To use another provider, change one
line in the `adapters:` section: replace `kind: hashing` with `kind: openai`, `kind: ollama` or
`kind: cohere` and give the model name. The API key is read from the environment variable named
by `api_key_env`. The vector table records the embedder's fingerprint, so a new provider needs a
new table.

## Retry and timeouts

Every external call can be retried. A policy declares `max_attempts`, the backoff (exponential,
fixed or immediate) and the jitter. Only errors whose code is listed in `on` are retried. A
per-attempt timeout and a total deadline bound the time spent.

## Rate limits

A rate limit allows a number of requests per period with an explicit burst. Every attempt,
including retries, passes the limiter, so retries never exceed the limit.

## Circuit breaker

The circuit breaker opens after consecutive failures or when the failure ratio over a window is
too high. While open, calls fail fast. After the reset delay, a few probe calls test whether the
service recovered.

## Storing vectors in PostgreSQL

The pgvector store writes chunks into a PostgreSQL table with an HNSW index. Without a dsn it
starts the embedded server under .funcpipe/pgdata. Give `dsn: ${DATABASE_URL}` to use your own
database server.

## Dead letters

Items that fail after every retry are written to the dead-letter file with the stage, the error
code, the message and the number of attempts.
"""


@pytest.mark.parametrize(
    ("question", "section"),
    [
        ("how do I switch the embedding provider?", "## Switching the embedding provider"),
        ("how do I use OpenAI embeddings instead?", "## Switching the embedding provider"),
        ("which python version do I need to install it?", "## Installation"),
        ("how many attempts are retried and with what backoff?", "## Retry and timeouts"),
        ("what happens to items that keep failing?", "## Dead letters"),
        ("how does the circuit breaker recover?", "## Circuit breaker"),
        ("can I use my own postgresql database server?", "## Storing vectors in PostgreSQL"),
    ],
)
def test_a_question_retrieves_its_section_first(question: str, section: str) -> None:
    e = _embedder()
    text = clean_text(GUIDE, CleanConfig())
    chunks = [s.text for s in split_text(text, 400, 50)]
    vectors = [e.embed_text(c) for c in chunks]
    q = e.embed_text(question)
    best = max(range(len(chunks)), key=lambda i: _cos(q, vectors[i]))
    assert section in chunks[best]
