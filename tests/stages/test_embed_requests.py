"""The embed stage fills each request to the provider's limits, proven at a local OpenAI-compatible server."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import funcpipe
from funcpipe.stages.vectors import estimate_tokens
from tests.fakes import OpenAIServer

KEY = "sk-test-requests"
TEXT_CHARS = 600  # 200 estimated tokens each
ITEMS = 300


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=16, models=None) as s:
        yield s


def _project(tmp_path: Path, server: OpenAIServer, adapter_extra: str, batch: str) -> Path:
    lines = [json.dumps({"id": f"d{i}", "text": (f"document {i} " * 100)[:TEXT_CHARS]}) for i in range(ITEMS)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""\
version: 1
name: requests
adapters:
  e: {{kind: openai, model: m, dimensions: 16, base_url: "{server.url}", api_key_env: FP_TEST_KEY{adapter_extra}}}
  s: {{kind: memory}}
stages:
  - {{id: load, use: source.jsonl, with: {{path: in.jsonl, id_field: id, text_field: text}}}}
  - {{id: embed, use: embed, adapter: e{batch}}}
  - {{id: store, use: vector.upsert, adapter: s}}
"""
    )
    return spec


def _run(spec: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    monkeypatch.setenv("FP_TEST_KEY", KEY)
    server.reset()
    report = funcpipe.load(spec).run()
    assert report.exit_code == 0, report.message
    assert report.accounting["done"] == ITEMS
    return [body["input"] for body in server.bodies("/embeddings")]


def test_by_default_the_whole_corpus_goes_in_the_fewest_requests_the_limits_allow(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _run(_project(tmp_path, server, "", ""), server, monkeypatch)

    assert [len(inputs) for inputs in sent] == [ITEMS]


def test_the_token_limit_per_request_bounds_every_request(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 10_000
    sent = _run(_project(tmp_path, server, f", max_request_tokens: {limit}", ""), server, monkeypatch)

    per_request = [sum(estimate_tokens(t) for t in inputs) for inputs in sent]
    assert all(tokens <= limit for tokens in per_request)
    assert len(sent) == math.ceil(ITEMS / (limit // estimate_tokens("x" * TEXT_CHARS)))
    assert sum(len(inputs) for inputs in sent) == ITEMS


def test_a_written_size_still_batches_by_it(
    tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _run(_project(tmp_path, server, "", ", batch: {size: 64}"), server, monkeypatch)

    assert [len(inputs) for inputs in sent] == [64, 64, 64, 64, 44]
