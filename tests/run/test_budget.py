"""Budgets end to end, against a real local OpenAI-compatible server and, for the store, embedded pgvector.

- A run with a budget of N requests makes at most N (counted at the server),
  stops with exit code 3 and a ``budget_exhausted`` report, and runs again to
  a store identical to an uninterrupted run's, never redoing a finished source.
- A token budget is respected within one batch: the batch that would cross it is not sent.
- The command line: ``--dry-run`` prints the estimate beside the budget, ``run``
  refuses (exit 4, nothing called) unless ``--force``, and the summary and the
  JSON log carry the usage and its cost.
- The dry-run token estimate is within 20% of what the provider counts on
  the repository's own corpus, counted by a real BPE tokenizer (Llama 2's,
  shipped with WordLlama: nothing is downloaded).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import funcpipe
from funcpipe.errors import BUDGET_EXHAUSTED_EXIT, BudgetExceeded
from funcpipe.policy import Event
from tests.e2e._support import REPO, env, fetch
from tests.e2e._support import funcpipe as funcpipe_cli
from tests.fakes import OpenAIServer
from tests.pg import resources_for, shared_dsn, unique_name

KEY = "sk-budget-test-0123456789abcdef"
DIM = 16
WORDS = ["budget", "token", "cost", "stream", "policy", "runner", "chunk", "embed", "store", "source", "ledger"]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=DIM) as s:
        yield s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve documents of seeded random words, each three or four chunks long."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(23)
    for i in range(12):
        paragraphs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(50)) for _ in range(2))]
        paragraphs += [" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(rng.randint(2, 3))]
        (root / f"doc{i:02d}.md").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return root


def write_spec(
    path: Path, server: OpenAIServer, corpus: Path, *, store: str, top: str = "", embed_policy: str = "", batch: int = 4
) -> Path:
    policy = f", policy: {embed_policy}" if embed_policy else ""
    path.write_text(
        f"""version: 1
name: budgeted
{top}
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, base_url: "{server.url}", dimensions: {DIM}}}
  store: {store}
stages:
  - {{id: load, use: source.files, with: {{path: "{corpus}", glob: "*.md"}}}}
  - {{id: chunk, use: text.chunk, with: {{size: 400, overlap: 40}}}}
  - {{id: embed, use: embed, adapter: embedder, batch: {{size: {batch}}}{policy}}}
  - {{id: store, use: vector.upsert, adapter: store, batch: {{size: 16}}}}
""",
        encoding="utf-8",
    )
    return path


def rows(table: str) -> set[tuple[str, str, str, str]]:
    found = fetch(shared_dsn(), f"SELECT id, source_id, text, embedding::text AS e FROM {table}")
    return {(r["id"], r["source_id"], r["text"], r["e"]) for r in found}


def test_a_request_budget_stops_the_run_at_n_requests_and_running_again_completes_it_without_redoing_work(
    server: OpenAIServer, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    budgeted, whole = unique_name("budget"), unique_name("whole")
    pg = "{kind: pgvector, table: %s}"
    (tmp_path / "a").mkdir()
    spec = write_spec(tmp_path / "a" / "spec.yaml", server, corpus, store=pg % budgeted, top="budget: {requests: 4}")
    pipeline = funcpipe.load(spec)
    assert pipeline.estimate().over_budget  # the corpus needs more than four requests

    with pytest.raises(BudgetExceeded, match=r"run budget: [0-9]+ request\(s\) > 4"):
        pipeline.run(resources=lambda state, clock: resources_for(state))
    assert server.count("/embeddings") == 0  # refused before anything was called

    reports, left = [], []
    for _ in range(12):
        # The estimate leaves out what earlier runs finished: it is the next run's.
        left.append(sum(s.requests or 0 for s in pipeline.estimate().stages))
        before = server.count("/embeddings")
        report = pipeline.run(force=True, resources=lambda state, clock: resources_for(state))
        assert server.count("/embeddings") - before <= 4
        reports.append(report)
        if report.status == "ok":
            break
    assert left == sorted(left, reverse=True) and left[-1] < left[0]
    assert sum(s.requests or 0 for s in pipeline.estimate(fresh=True).stages) == left[0]
    first = reports[0]
    assert (first.status, first.exit_code) == ("budget_exhausted", BUDGET_EXHAUSTED_EXIT)
    assert "run budget of 4 request(s) is spent" in (first.message or "")
    assert first.accounting["unfinished"] > 0 and first.accounting["invariant_holds"]
    assert first.dead_lettered == 0
    assert first.usage["embedder"]["requests"] == 4
    assert first.budgets[0]["exhausted"] and first.budgets[0]["spent"]["requests"] == 4
    assert reports[-1].status == "ok" and len(reports) > 2
    # No source item is done twice: each run skips exactly what the earlier runs finished.
    finished = 0
    for report in reports:
        assert report.accounting["skipped"] == finished
        finished += report.accounting["done"]
    assert finished == 12

    (tmp_path / "b").mkdir()
    uninterrupted = write_spec(tmp_path / "b" / "spec.yaml", server, corpus, store=pg % whole)
    assert funcpipe.load(uninterrupted).run(resources=lambda state, clock: resources_for(state)).status == "ok"
    assert rows(budgeted) == rows(whole)


def test_a_token_budget_is_respected_within_one_batch(
    server: OpenAIServer, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # A batch of eight chunks is estimated at about 830 tokens (the server bills fewer, one per
    # word): the first batch fits, the second would cross, so the budget ends inside it.
    limit = 1200
    spec = write_spec(
        tmp_path / "spec.yaml",
        server,
        corpus,
        store="{kind: memory}",
        embed_policy=f"{{budget: {{tokens: {limit}}}}}",
        batch=8,
    )
    events: list[Event] = []
    before = len(server.bodies("/embeddings"))

    report = funcpipe.load(spec).run(force=True, on_event=events.append)

    sent = server.bodies("/embeddings")[before:]
    billed = sum(len(text.split()) for body in sent for text in body["input"])
    assert len(sent) >= 1
    assert billed <= limit
    assert report.status == "budget_exhausted"
    assert report.usage["embedder"]["input_tokens"] == billed  # the provider's own count
    refused = [e for e in events if e.kind == "budget"]
    assert refused and refused[0].stage == "embed"
    assert "would cross the stage embed budget of 1200 token(s)" in str(refused[0].data["reason"])


def test_the_command_line_estimates_refuses_forces_and_reports_usage_and_cost(
    server: OpenAIServer, corpus: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", server, corpus, store="{kind: memory}", top="budget: {requests: 3}")
    environ = env(OPENAI_API_KEY=KEY)

    dry = funcpipe_cli("run", str(spec), "--dry-run", environ=environ)
    assert dry.returncode == 0, dry.stderr
    assert "budget (run): 3 req; estimate" in dry.stdout
    assert "exceeds it" in dry.stdout and "refuses to start unless --force" in dry.stdout
    plan = json.loads(funcpipe_cli("run", str(spec), "--dry-run", "--log-format", "json", environ=environ).stdout)
    assert plan["budgets"][0]["exceeds"] and plan["tokens"] > 0 and plan["cost"] > 0

    before = server.count("/embeddings")
    refused = funcpipe_cli("run", str(spec), environ=environ)
    assert refused.returncode == 4, refused.stderr
    assert "the estimate exceeds the budget, so the run was not started" in refused.stderr
    assert "--force" in refused.stderr
    assert server.count("/embeddings") == before

    forced = funcpipe_cli("run", str(spec), "--force", environ=environ)
    assert forced.returncode == BUDGET_EXHAUSTED_EXIT, forced.stderr
    assert server.count("/embeddings") - before == 3
    assert "budget (run): 3 of 3 request(s) spent (exhausted)" in forced.stderr
    assert "usage" in forced.stderr and "provider" in forced.stderr
    assert "stopped by the budget" in forced.stderr and "run again to resume" in forced.stderr

    logged = funcpipe_cli("run", str(spec), "--force", "--log-format", "json", environ=environ)
    assert logged.returncode == BUDGET_EXHAUSTED_EXIT
    lines = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    usage = [line for line in lines if line["event"] == "usage" and line["stage"] == "embed"]
    report = lines[-1]
    assert report["event"] == "report" and report["status"] == "budget_exhausted"
    assert len(usage) == report["usage"]["embedder"]["requests"] == 3
    assert report["usage"]["embedder"]["counted"] == "provider"
    assert report["cost"] == pytest.approx(report["usage"]["embedder"]["input_tokens"] * 0.02 / 1e6)


def _llama_tokens() -> Any:
    from tokenizers import Tokenizer

    path = resources.files("wordllama").joinpath("tokenizers", "l2_supercat_tokenizer_config.json")
    tokenizer = Tokenizer.from_file(str(path))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_the_dry_run_token_estimate_is_within_20_percent_of_the_providers_count_on_the_repo_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    rag = (REPO / "pipelines" / "rag.yaml").read_text(encoding="utf-8")
    with OpenAIServer(api_key=KEY, dim=DIM, count_tokens=_llama_tokens()) as server:
        spec = tmp_path / "rag.yaml"
        # The main job, but embedding through the provider and keeping vectors in memory.
        spec.write_text(
            re.sub(
                r"(?m)^  embedder: .*$",
                f'  embedder: {{kind: openai, model: text-embedding-3-small, base_url: "{server.url}", '
                f"dimensions: {DIM}}}",
                re.sub(r"(?m)^  store: .*$", "  store: {kind: memory}", rag),
            ).replace('path: ".."', f'path: "{REPO}"'),
            encoding="utf-8",
        )
        pipeline = funcpipe.load(spec)
        estimate = pipeline.estimate()
        report = pipeline.run(state_dir=tmp_path / "state")
    measured = report.usage["embedder"]
    assert report.status == "ok" and measured["counted"] == "provider"
    assert measured["input_tokens"] > 10_000
    assert abs(estimate.tokens - measured["input_tokens"]) <= 0.2 * measured["input_tokens"]
    assert estimate.cost is not None and report.cost is not None
    assert abs(estimate.cost - report.cost) <= 0.2 * report.cost
