"""Ingestion through a hostile embedding API ends with every chunk stored exactly once.

The local OpenAI server throttles at `RATE` requests/s (429 with Retry-After
beyond it) and answers about 30% of the other requests with a 429, a 500, a
503 or a connection reset (seeded), in shuffled order. A ``funcpipe run``
with a retry and rate-limit policy must still store every chunk once in the
embedded pgvector, each with its own vector, and dead-letter nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests.e2e._support import CANARY, corpus_paths, env, fetch, funcpipe, make_project, postgres
from tests.fakes import Fault, OpenAIServer, hashing_embed

RATE = 40
DIM = 64
FAULT_RATE = 0.3
SEED = 1
"""Its first 13 fault draws inject every kind, before 25 successes (the fewest a run needs) are drawn."""

SPEC = f"""\
version: 1
name: chaos
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, dimensions: {DIM}, base_url: "${{OPENAI_BASE_URL}}"}}
  store: {{kind: pgvector, table: chunks}}
policies:
  embed_api:
    timeout: {{attempt: 5s, total: 2m}}
    retry:
      max_attempts: 12
      backoff: {{kind: exponential, initial: 20ms, factor: 2, max: 500ms}}
      jitter: full
    rate_limit: {{requests: {RATE}, per: 1s}}
    concurrency: 4
  database:
    timeout: {{attempt: 60s}}
    retry: {{max_attempts: 5}}
stages:
  - {{id: load, use: source.files, with: {{path: "..", glob: [README.md, "docs/**/*.md"]}}}}
  - {{id: clean, use: text.clean}}
  - {{id: chunk, use: text.chunk, with: {{size: 400, overlap: 50}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: embed_api, batch: {{size: 2, max_wait: 50ms}}}}
  - {{id: store, use: vector.upsert, adapter: store, policy: database, batch: {{size: 16, max_wait: 100ms}}}}
on_error: {{mode: continue}}
"""

FAULTS = [Fault.rate_limit("1", retry_after_ms="200"), Fault.server_error(500), Fault.server_error(503), Fault.reset()]


@dataclass(frozen=True)
class Chaos:
    """The run, its report, what the server saw and what the store holds."""

    project: Path
    run: CompletedProcess[str]
    report: dict[str, Any]
    requests: int
    statuses: dict[int, int]
    injected: dict[str, int]
    rows: list[dict[str, Any]]

    def stage(self, stage_id: str) -> dict[str, Any]:
        """The report's entry for ``stage_id``."""
        found: dict[str, Any] = next(s for s in self.report["stages"] if s["id"] == stage_id)
        return found


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Chaos:
    project = make_project(tmp_path_factory.mktemp("chaos"), {"pipelines/chaos.yaml": SPEC})
    with OpenAIServer(api_key=CANARY, dim=DIM, shuffle=True) as server:
        server.throttle(RATE)
        server.random_faults(FAULT_RATE, FAULTS, seed=SEED)
        ran = funcpipe(
            "run",
            str(project / "pipelines" / "chaos.yaml"),
            "--quiet",
            "--report",
            str(project / "report.json"),
            environ=env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=CANARY),
        )
        requests = server.count("/embeddings")
        statuses, injected = dict(server.statuses), dict(server.faults_injected)
    assert ran.returncode == 0, ran.stderr
    with postgres(project / "pipelines" / ".funcpipe" / "pgdata") as dsn:
        rows = fetch(dsn, 'SELECT id, text, meta->>\'path\' AS path, embedding::real[] AS v FROM "public"."chunks"')
    report = json.loads((project / "report.json").read_text(encoding="utf-8"))
    return Chaos(project, ran, report, requests, statuses, injected, rows)


def test_the_server_was_hostile(chaos: Chaos) -> None:
    assert set(chaos.injected) == {"429", "500", "503", "reset"}
    assert chaos.stage("embed")["retries"] >= sum(chaos.injected.values())


def test_every_attempt_is_one_request_to_the_server(chaos: Chaos) -> None:
    assert chaos.stage("embed")["calls"] == chaos.requests


def test_nothing_is_dead_lettered(chaos: Chaos) -> None:
    assert chaos.report["dead_lettered"] == 0
    assert not (chaos.project / "pipelines" / ".funcpipe" / "chaos.dead.jsonl").exists()


def test_every_document_is_done(chaos: Chaos) -> None:
    accounting = chaos.report["accounting"]
    assert accounting["done"] == accounting["sources"] == len(corpus_paths(chaos.project))
    assert accounting["failed"] == 0 and accounting["invariant_holds"]


def test_every_chunk_is_stored_exactly_once(chaos: Chaos) -> None:
    ids = [r["id"] for r in chaos.rows]
    assert len(ids) == len(set(ids)) == chaos.stage("chunk")["outputs"]
    assert {r["path"] for r in chaos.rows} == corpus_paths(chaos.project)


def test_every_chunk_is_stored_with_its_own_vector(chaos: Chaos) -> None:
    for row in chaos.rows:
        expected = hashing_embed(row["text"], DIM)
        assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for a, b in zip(row["v"], expected, strict=True))
