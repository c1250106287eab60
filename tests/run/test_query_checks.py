"""``funcpipe query`` checks the table's embedder before asking it anything: real subprocesses, real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e._support import env, funcpipe
from tests.pg import shared_dsn, unique_name

QUESTION = "what does line 2 say?"
INGESTED = "hashing:v1-c3-5-w2:32"
"""The fingerprint of the embedder the table is written with."""


def write_spec(root: Path, table: str, embedder: str, *, store: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lines.jsonl").write_text(
        "".join(f'{{"text": "line {n} says the sky is colour {n}"}}\n' for n in range(5)), encoding="utf-8"
    )
    pgvector = f'{{kind: pgvector, table: {table}, dsn: "${{DATABASE_URL}}", index: none}}'
    spec = root / "rag.yaml"
    spec.write_text(
        "version: 1\n"
        "name: rag\n"
        "adapters:\n"
        f"  embedder: {embedder}\n"
        f"  store: {store or pgvector}\n"
        "  llm: {kind: extractive}\n"
        "stages:\n"
        "  - {id: load, use: source.jsonl, with: {path: lines.jsonl, text_field: text}}\n"
        "  - {id: embed, use: embed, adapter: embedder}\n"
        "  - {id: store, use: vector.upsert, adapter: store}\n"
        'query: {top_k: 2, adapter: llm, prompt: "{{ question }}"}\n',
        encoding="utf-8",
    )
    return spec


def run(*args: str) -> tuple[int, str]:
    proc = funcpipe(*args, environ=env(DATABASE_URL=shared_dsn()))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A table ingested with the 32-dimensional hashing embedder."""
    name = unique_name("query")
    spec = write_spec(tmp_path_factory.mktemp("ingest"), name, "{kind: hashing, dim: 32}")
    code, err = run("run", str(spec))
    assert code == 0, err
    return name


def test_a_query_with_the_ingesting_embedder_answers(table: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, table, "{kind: hashing, dim: 32}")
    proc = funcpipe("query", str(spec), QUESTION, environ=env(DATABASE_URL=shared_dsn()))
    assert proc.returncode == 0, proc.stderr
    assert "line 2" in proc.stdout


@pytest.mark.parametrize(
    ("embedder", "configured"),
    [
        ("{kind: hashing, dim: 64}", "hashing:v1-c3-5-w2:64"),  # another dimension
        ("{kind: hashing, dim: 32, char_ngrams: [2, 4]}", "hashing:v1-c2-4-w2:32"),  # same dimension, another model
    ],
)
def test_a_query_with_another_embedder_names_both_fingerprints_and_the_fix(
    table: str, tmp_path: Path, embedder: str, configured: str
) -> None:
    spec = write_spec(tmp_path, table, embedder)
    code, err = run("query", str(spec), QUESTION)

    assert code == 1
    assert f"table public.{table}" in err
    assert f"holds vectors from embedder {INGESTED} (kind hashing, model v1-c3-5-w2, dimension 32)" in err
    kind, model, dim = configured.split(":")
    assert f"the spec's embedder 'embedder' is {configured} (kind {kind}, model {model}, dimension {dim})" in err
    assert "query with the embedder the table was written with" in err
    assert "point adapters.store.table at another table" in err
    assert "--fresh" in err
    assert "SQLSTATE" not in err


def test_a_query_before_any_ingest_says_to_run_the_spec_first(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, unique_name("never"), "{kind: hashing, dim: 32}")
    code, err = run("query", str(spec), QUESTION)

    assert code == 1
    assert "nothing ingested yet" in err
    assert f"run `funcpipe run {spec}` first" in err
    assert "SQLSTATE" not in err


def test_a_query_of_an_empty_memory_store_says_to_run_the_spec_first(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "unused", "{kind: hashing, dim: 32}", store="{kind: memory}")
    code, err = run("query", str(spec), QUESTION)

    assert code == 1
    assert "nothing ingested yet: store 'store'" in err
