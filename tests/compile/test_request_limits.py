"""Requests filled to the provider's limit: what each embedder declares, and the batch the compiler resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

import funcpipe
from funcpipe.errors import SpecErrors
from funcpipe.policy import Batch, RequestLimits

SPEC = """\
version: 1
name: limits
adapters:
  e: {embedder}
  s: {{kind: memory}}
policies:
  p: {policy}
stages:
  - {{id: load, use: source.jsonl, with: {{path: in.jsonl, text_field: text, allow_empty: true}}}}
  - {{id: embed, use: embed, adapter: e, policy: p{batch}}}
  - {{id: store, use: vector.upsert, adapter: s}}
"""

OPENAI = "{kind: openai, model: text-embedding-3-small, base_url: 'http://127.0.0.1:9/v1'}"
COHERE = "{kind: cohere, base_url: 'http://127.0.0.1:9'}"
HASHING = "{kind: hashing}"


def _load(tmp_path: Path, embedder: str, batch: str = "", policy: str = "{}") -> funcpipe.Pipeline:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(embedder=embedder, batch=batch, policy=policy))
    return funcpipe.load(spec, env={})


def _embed_batch(pipeline: funcpipe.Pipeline) -> Batch | None:
    return pipeline.compiled.stage("embed").run_batch


@pytest.mark.parametrize(
    ("embedder", "limits"),
    [
        (OPENAI, RequestLimits(inputs=2048, tokens=300_000)),
        (COHERE, RequestLimits(inputs=96)),
        ("{kind: ollama, model: nomic-embed-text, dimensions: 768}", RequestLimits(inputs=512)),
        (HASHING, None),
    ],
)
def test_each_embedder_declares_its_documented_request_limits(
    tmp_path: Path, embedder: str, limits: RequestLimits | None
) -> None:
    assert _load(tmp_path, embedder).compiled.stage("embed").limits == limits


def test_by_default_an_embed_batch_fills_one_request_to_the_providers_limits(tmp_path: Path) -> None:
    assert _embed_batch(_load(tmp_path, OPENAI)) == Batch(size=2048, max_tokens=300_000)
    assert _embed_batch(_load(tmp_path, OPENAI, ", batch: {max_wait: 200ms}")) == Batch(
        size=2048, max_wait=0.2, max_tokens=300_000
    )
    assert _embed_batch(_load(tmp_path, COHERE, ", batch: {size: auto}")) == Batch(size=96)


def test_an_embedder_that_declares_no_limits_keeps_the_kinds_default_size(tmp_path: Path) -> None:
    assert _embed_batch(_load(tmp_path, HASHING)) == Batch(size=64)


def test_a_size_or_token_budget_written_within_the_limits_is_kept(tmp_path: Path) -> None:
    written = _load(tmp_path, OPENAI, ", batch: {size: 100, max_tokens: 5000}")
    assert _embed_batch(written) == Batch(size=100, max_tokens=5000)


def test_a_rate_limit_in_tokens_caps_the_tokens_of_one_batch(tmp_path: Path) -> None:
    tokens = _load(tmp_path, OPENAI, policy="{rate_limit: {requests: 40000, per: 1m, cost: tokens}}")
    assert _embed_batch(tokens) == Batch(size=2048, max_tokens=40_000)
    items = _load(tmp_path, OPENAI, policy="{rate_limit: {requests: 500, per: 1m, burst: 10, cost: items}}")
    assert _embed_batch(items) == Batch(size=509, max_tokens=300_000)
    requests = _load(tmp_path, OPENAI, policy="{rate_limit: {requests: 2, per: 1s}}")
    assert _embed_batch(requests) == Batch(size=2048, max_tokens=300_000)


@pytest.mark.parametrize(
    ("embedder", "batch", "where", "limit"),
    [
        (COHERE, "{size: 200}", "stages[1].batch.size", "96 inputs"),
        (OPENAI, "{size: 4096}", "stages[1].batch.size", "2048 inputs"),
        (OPENAI, "{max_tokens: 400000}", "stages[1].batch.max_tokens", "300000 tokens"),
    ],
)
def test_a_batch_beyond_what_one_request_takes_is_a_located_error(
    tmp_path: Path, embedder: str, batch: str, where: str, limit: str
) -> None:
    with pytest.raises(SpecErrors) as caught:
        _load(tmp_path, embedder, f", batch: {batch}")

    error = caught.value.errors[0]
    assert (error.path, error.line) == (where, 10)
    assert limit in error.message and "'e'" in error.message
    assert error.hint is not None and "or less" in error.hint


def test_a_lower_adapter_limit_lowers_the_batch_and_the_bound(tmp_path: Path) -> None:
    small = "{kind: openai, model: text-embedding-3-small, base_url: 'http://127.0.0.1:9/v1', max_batch: 500}"
    assert _embed_batch(_load(tmp_path, small)) == Batch(size=500, max_tokens=300_000)
    with pytest.raises(SpecErrors, match="500 inputs"):
        _load(tmp_path, small, ", batch: {size: 501}")
