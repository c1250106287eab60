"""The resume key is what defines the output: real runs against a local OpenAI-compatible server and PostgreSQL.

Embedding requests are counted at the fake server: a policy-only edit or a
new base URL makes none; a chunk-size edit re-embeds exactly the chunks a
clean run has; a model edit is refused before any request (the table holds
the other embedder's vectors) and redoes everything into a new table;
``--fresh`` redoes everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from funcpipe.compile import compile_pipeline
from funcpipe.compile._resume import database_identity
from funcpipe.spec import load_spec_text
from tests.fakes import OpenAIServer
from tests.pg import unique_name
from tests.store._support import CORPUS, clean_rows, rows, run, write

SPEC = """\
version: 1
name: keyed
# {comment}
adapters:
  embedder:
    kind: openai
    model: {model}
    dimensions: 64
    base_url: "${{OPENAI_BASE_URL}}"
    max_batch: {max_batch}
    request_timeout: {request_timeout}
  store: {{kind: pgvector, dsn: "${{DATABASE_URL}}", table: {table}, pool_max: {pool_max}}}
policies:
  api:
    timeout: {{attempt: {timeout}}}
    retry: {{max_attempts: {max_attempts}, backoff: {{kind: fixed, initial: 10ms}}}}
    rate_limit: {{requests: {rate}, per: 1s}}
    concurrency: {concurrency}
stages:
  - {{id: load, use: source.files, with: {{path: docs, glob: "**/*.md"}}}}
  - {{id: chunk, use: text.chunk, with: {{size: {size}, overlap: 20}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: api, batch: {{size: {batch}, max_wait: 50ms}}}}
  - {{id: store, use: vector.upsert, adapter: store, batch: {{size: {store_batch}}}}}
on_error: {{mode: {on_error}}}
"""

BASE = {
    "comment": "first version",
    "model": "text-embedding-3-small",
    "max_batch": 2048,
    "request_timeout": "60s",
    "pool_max": 4,
    "timeout": "30s",
    "max_attempts": 8,
    "rate": 100,
    "concurrency": 4,
    "size": 120,
    "batch": 8,
    "store_batch": 256,
    "on_error": "continue",
}

POLICY_ONLY = {
    "comment": "second version, reformatted",
    "max_batch": 16,
    "request_timeout": "90s",
    "pool_max": 2,
    "timeout": "45s",
    "max_attempts": 9,
    "rate": 50,
    "concurrency": 2,
    "batch": 3,
    "store_batch": 7,
    "on_error": "fail_fast",
}


def spec_text(table: str, **changes: object) -> str:
    return SPEC.format(table=table, **{**BASE, **changes})


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key="test-key", dim=64) as s:
        yield s


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root, CORPUS)
    return root


def go(project: Path, text: str, server: OpenAIServer, *args: str) -> dict[str, object]:
    spec = project / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    proc, report = run(spec, *args, OPENAI_BASE_URL=server.url, OPENAI_API_KEY="test-key")
    assert proc.returncode == 0, proc.stderr
    return report


def embedded_texts(server: OpenAIServer) -> int:
    return sum(len(body["input"]) for body in server.bodies("/embeddings"))


def test_a_policy_only_edit_makes_no_embedding_request(project: Path, server: OpenAIServer) -> None:
    table = unique_name("key")
    go(project, spec_text(table), server)
    assert server.count("/embeddings") > 0
    before, requests = rows(table), server.count("/embeddings")
    report = go(project, spec_text(table, **POLICY_ONLY), server)
    assert server.count("/embeddings") == requests
    assert (report["accounting"]["done"], report["accounting"]["skipped"]) == (0, len(CORPUS))
    assert rows(table) == before


def test_another_base_url_makes_no_embedding_request(project: Path, server: OpenAIServer) -> None:
    table = unique_name("key")
    go(project, spec_text(table), server)
    with OpenAIServer(api_key="test-key", dim=64) as other:
        assert other.port != server.port
        report = go(project, spec_text(table), other)
        assert other.count() == 0
    assert report["accounting"]["skipped"] == len(CORPUS)


def test_a_chunk_size_edit_redoes_exactly_every_chunk(project: Path, server: OpenAIServer) -> None:
    table = unique_name("key")
    go(project, spec_text(table), server)
    server.reset()
    text = spec_text(table, size=60)
    report = go(project, text, server)
    assert report["accounting"]["done"] == len(CORPUS)
    redone = embedded_texts(server)
    clean = clean_rows(project, text, table, OPENAI_BASE_URL=server.url, OPENAI_API_KEY="test-key")
    assert redone == len(clean)
    assert rows(table) == clean


def test_a_model_edit_is_refused_before_any_request_and_a_new_table_redoes_it(
    project: Path, server: OpenAIServer
) -> None:
    table = unique_name("key")
    go(project, spec_text(table), server)
    server.reset()
    spec = project / "spec.yaml"
    spec.write_text(spec_text(table, model="text-embedding-3-large"), encoding="utf-8")
    proc, report = run(spec, OPENAI_BASE_URL=server.url, OPENAI_API_KEY="test-key")
    assert proc.returncode == 1
    assert "text-embedding-3-small" in report["message"] and "text-embedding-3-large" in report["message"]
    assert server.count("/embeddings") == 0
    report = go(project, spec_text(unique_name("key2"), model="text-embedding-3-large"), server)
    assert report["accounting"]["done"] == len(CORPUS)
    assert server.count("/embeddings") > 0


def test_fresh_redoes_everything(project: Path, server: OpenAIServer) -> None:
    table = unique_name("key")
    go(project, spec_text(table), server)
    first = embedded_texts(server)
    server.reset()
    report = go(project, spec_text(table), server, "--fresh")
    assert report["accounting"]["done"] == len(CORPUS)
    assert embedded_texts(server) == first


# -- the key itself, without running -----------------------------------------------------


def key(text: str, **env: str) -> str:
    loaded = load_spec_text(text, env={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "DATABASE_URL": DSN, **env})
    return compile_pipeline(loaded).resume_keys["load"]


DSN = "postgresql://alice:secret@db.example:5432/corpus"


def test_policies_endpoints_keys_and_comments_leave_the_key_alone() -> None:
    assert key(spec_text("t")) == key(spec_text("t", **POLICY_ONLY))
    assert key(spec_text("t")) == key(spec_text("t"), OPENAI_BASE_URL="http://127.0.0.1:2/v1")
    assert key(spec_text("t")) == key(spec_text("t"), DATABASE_URL="postgresql://bob:other@db.example/corpus")


@pytest.mark.parametrize(
    ("changes", "env"),
    [
        ({"size": 60}, {}),
        ({"model": "text-embedding-3-large"}, {}),
        ({"table": "other"}, {}),
        ({}, {"DATABASE_URL": "postgresql://alice:secret@db.example:5433/corpus"}),
        ({}, {"DATABASE_URL": "postgresql://alice:secret@db.example:5432/other"}),
    ],
)
def test_what_shapes_the_output_changes_the_key(changes: dict[str, object], env: dict[str, str]) -> None:
    table = str(changes.pop("table", "t"))
    assert key(spec_text("t")) != key(spec_text(table, **changes), **env)


def test_the_database_identity_holds_no_credentials() -> None:
    assert database_identity(DSN) == {"host": "db.example", "port": 5432, "dbname": "corpus"}
    assert database_identity(None) == {"embedded": True}
