"""A small spec and helpers to write and run test files in a temporary directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

from funcpipe.pipetest import run_tests
from funcpipe.pipetest.results import CaseResult, TestResults

SPEC = """\
version: 1
name: small
adapters:
  embedder: {kind: hashing, dim: 64}
  store: {kind: pgvector, table: chunks}
  llm: {kind: extractive}
policies:
  api:
    retry:
      max_attempts: 4
      backoff: {kind: exponential, initial: 1s, factor: 2, max: 1m}
      jitter: none
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: chunk, use: text.chunk, with: {size: 200, overlap: 20}}
  - {id: embed, use: embed, adapter: embedder, policy: api}
  - {id: store, use: vector.upsert, adapter: store}
query: {top_k: 2, adapter: llm, prompt: "{{ question }}"}
on_error: {mode: continue}
"""

DOCS = {
    "a.md": "# Apples\n\nApples are red or green fruit that grow on trees in orchards.",
    "b.md": "# Boats\n\nBoats float on water; a sail or an engine moves them along.",
}


def write(tmp_path: Path, tests: str, *, spec: str = SPEC, name: str = "small.test.yaml") -> Path:
    """Write the spec, its docs and a test file holding ``tests`` (YAML under ``tests:``); the test file's path."""
    (tmp_path / "small.yaml").write_text(spec, encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for file, text in DOCS.items():
        (docs / file).write_text(text, encoding="utf-8")
    path = tmp_path / name
    path.write_text("spec: small.yaml\ntests:\n" + textwrap.indent(textwrap.dedent(tests), "  "), encoding="utf-8")
    return path


def run(path: Path, **options: object) -> TestResults:
    """Run one test file in this process."""
    return run_tests([path], jobs=1, **options)  # type: ignore[arg-type]


def only(results: TestResults) -> CaseResult:
    """The one test's result."""
    [case] = results.cases
    return case


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` where ``text`` first appears."""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in {path}")
