"""The one-line switch, proven: each ``examples/rag-*.yaml`` is ``pipelines/rag.yaml`` but for one line, and runs.

Each provider variant ingests the project's docs through its local server
(``base_url`` from the environment, the API key a canary) into its own
embedded pgvector, then answers a question from them. The external-PostgreSQL
variant writes to a second embedded server, started by the test and reached
only through ``DATABASE_URL``, as if it were external. The Qdrant, Chroma and
LanceDB variants ingest into their embedded stores under ``.funcpipe/``, run
again to show that nothing is embedded or added twice, and answer.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from funcpipe.adapters.chroma import ChromaStore
from funcpipe.adapters.config import ChromaConfig, LanceDBConfig, QdrantConfig
from funcpipe.adapters.lancedb import LanceDBStore
from funcpipe.adapters.qdrant import QdrantStore
from funcpipe.core import Ok
from funcpipe.ports import VectorStorePort
from funcpipe.run.resources import RunResources
from tests.e2e._support import (
    ANSWERING_DOC,
    CANARY,
    QUESTION,
    RAG,
    REPO,
    changed_lines,
    corpus_paths,
    env,
    fetch,
    files_containing,
    funcpipe,
    make_project,
    postgres,
)
from tests.fakes import CohereServer, FakeServer, OllamaServer, OpenAIServer


@dataclass(frozen=True)
class Provider:
    """An embedding provider's variant: its file, its server, and how the spec finds them."""

    example: str
    server: Callable[[], FakeServer]
    url_env: str
    key_env: str | None
    embed_path: str


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(
        "rag-openai.yaml",
        lambda: OpenAIServer(api_key=CANARY, dim=1536, models=["text-embedding-3-small"]),
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "/embeddings",
    ),
    "ollama": Provider(
        "rag-ollama.yaml",
        lambda: OllamaServer(dim=768, models=["nomic-embed-text"]),
        "OLLAMA_BASE_URL",
        None,
        "/api/embed",
    ),
    "cohere": Provider(
        "rag-cohere.yaml",
        lambda: CohereServer(api_key=CANARY, dim=1536, models=["embed-v4.0"]),
        "COHERE_BASE_URL",
        "CO_API_KEY",
        "/v2/embed",
    ),
}

SWITCHED = {
    "rag-openai.yaml": "  embedder:",
    "rag-ollama.yaml": "  embedder:",
    "rag-cohere.yaml": "  embedder:",
    "rag-postgres.yaml": "  store:",
    "rag-qdrant.yaml": "  store:",
    "rag-chroma.yaml": "  store:",
    "rag-lancedb.yaml": "  store:",
}
"""Each example and the adapter line it changes."""


@dataclass(frozen=True)
class Outcome:
    """What one variant's run and query did."""

    project: Path
    run: CompletedProcess[str]
    query: CompletedProcess[str]
    report: dict[str, Any]
    answer: dict[str, Any]
    bodies: list[Any]
    auth: list[str | None]

    @property
    def outputs(self) -> str:
        """Everything both processes printed."""
        return self.run.stdout + self.run.stderr + self.query.stdout + self.query.stderr


def run_and_ask(project: Path, example: str, environ: dict[str, str]) -> tuple[CompletedProcess[str], ...]:
    """``funcpipe run`` the example with a report, then ``funcpipe query`` it as JSON."""
    spec = str(project / "examples" / example)
    ran = funcpipe("run", spec, "--report", str(project / "report.json"), environ=environ)
    asked = funcpipe("query", spec, QUESTION, "--json", environ=environ)
    return ran, asked


def project_for(root: Path, example: str) -> Path:
    """A project copy holding ``examples/<example>`` as it is in the repository."""
    return make_project(root, {f"examples/{example}": (REPO / "examples" / example).read_text(encoding="utf-8")})


def outcome(
    project: Path,
    ran: CompletedProcess[str],
    asked: CompletedProcess[str],
    *,
    bodies: list[Any] | None = None,
    auth: list[str | None] | None = None,
) -> Outcome:
    """Read what the run left behind; fail with the output if either process failed."""
    assert ran.returncode == 0, ran.stderr
    assert asked.returncode == 0, asked.stderr
    report = json.loads((project / "report.json").read_text(encoding="utf-8"))
    return Outcome(project, ran, asked, report, json.loads(asked.stdout), bodies or [], auth or [])


# -- the diff ------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(SWITCHED))
def test_example_differs_from_rag_by_its_adapter_line_only(example: str) -> None:
    before = RAG.read_text(encoding="utf-8")
    after = (REPO / "examples" / example).read_text(encoding="utf-8")
    changes = changed_lines(before, after)
    assert len(changes) == 1, changes
    old, new = changes[0]
    assert old.startswith(SWITCHED[example]) and new.startswith(SWITCHED[example])


@pytest.mark.parametrize("example", sorted(SWITCHED))
def test_readme_shows_the_example_diff_as_it_is(example: str) -> None:
    diff = difflib.unified_diff(
        RAG.read_text(encoding="utf-8").splitlines(),
        (REPO / "examples" / example).read_text(encoding="utf-8").splitlines(),
        "pipelines/rag.yaml",
        f"examples/{example}",
        n=0,
        lineterm="",
    )
    section = (
        (REPO / "README.md").read_text(encoding="utf-8").split("## Switching providers\n", 1)[1].split("\n## ", 1)[0]
    )
    assert "```diff\n" + "\n".join(diff) + "\n```\n" in section


# -- the providers, run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Outcome]:
    """Run and query a provider's variant on first request; later requests reuse the outcome."""
    done: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name not in done:
            done[name] = _run_provider(name, tmp_path_factory.mktemp(name))
        return done[name]

    return get


def _run_provider(name: str, root: Path) -> Outcome:
    provider = PROVIDERS[name]
    project = project_for(root, provider.example)
    with provider.server() as server:
        variables = {provider.url_env: server.url}
        if provider.key_env is not None:
            variables[provider.key_env] = CANARY
        ran, asked = run_and_ask(project, provider.example, env(**variables))
        requests = [r for r in server.requests if r.path == server.prefix + provider.embed_path]
    return outcome(
        project,
        ran,
        asked,
        bodies=[r.json() for r in requests],
        auth=[r.headers.get("authorization") for r in requests],
    )


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_variant_ingests_every_doc(name: str, provider_run: Callable[[str], Outcome]) -> None:
    done = provider_run(name)
    accounting = done.report["accounting"]
    assert accounting["done"] == accounting["sources"] == len(corpus_paths(done.project))
    assert done.report["dead_lettered"] == 0


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_variant_embeds_every_chunk_and_the_question_through_its_server(
    name: str, provider_run: Callable[[str], Outcome]
) -> None:
    done = provider_run(name)
    chunks = next(s["outputs"] for s in done.report["stages"] if s["id"] == "chunk")
    texts = sum(len(b.get("input") or b.get("texts") or []) for b in done.bodies)
    assert texts == chunks + 1


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_variant_answers_from_the_section_that_answers(
    name: str, provider_run: Callable[[str], Outcome]
) -> None:
    assert provider_run(name).answer["sources"][0]["meta"]["path"] == ANSWERING_DOC


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_variant_sends_the_key_from_the_environment(name: str, provider_run: Callable[[str], Outcome]) -> None:
    expected = f"Bearer {CANARY}" if PROVIDERS[name].key_env is not None else None
    assert set(provider_run(name).auth) == {expected}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_variant_never_shows_or_stores_the_key(name: str, provider_run: Callable[[str], Outcome]) -> None:
    done = provider_run(name)
    assert CANARY not in done.outputs
    assert files_containing(done.project, CANARY) == []


def test_cohere_variant_embeds_chunks_as_documents_and_the_question_as_a_query(
    provider_run: Callable[[str], Outcome],
) -> None:
    *ingest, question = provider_run("cohere").bodies
    assert {b["input_type"] for b in ingest} == {"search_document"}
    assert question["input_type"] == "search_query"
    assert question["texts"] == [QUESTION]


# -- the external PostgreSQL, run ------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Outcome, list[dict[str, Any]]]]:
    """The postgres variant run and queried against a second server; the rows it holds."""
    root = tmp_path_factory.mktemp("external")
    project = project_for(root / "project", "rag-postgres.yaml")
    with postgres(root / "server" / "pgdata") as dsn:
        ran, asked = run_and_ask(project, "rag-postgres.yaml", env(DATABASE_URL=dsn))
        rows = fetch(dsn, 'SELECT id, meta->>\'path\' AS path FROM "public"."chunks"')
    yield outcome(project, ran, asked), rows


def test_postgres_variant_stores_every_chunk_in_the_external_server(
    postgres_run: tuple[Outcome, list[dict[str, Any]]],
) -> None:
    done, rows = postgres_run
    chunks = next(s["outputs"] for s in done.report["stages"] if s["id"] == "chunk")
    assert len(rows) == len({r["id"] for r in rows}) == chunks
    assert {r["path"] for r in rows} == corpus_paths(done.project)


def test_postgres_variant_starts_no_embedded_server(postgres_run: tuple[Outcome, list[dict[str, Any]]]) -> None:
    done, _ = postgres_run
    assert not (done.project / "examples" / ".funcpipe" / "pgdata").exists()


def test_postgres_variant_answers_from_the_external_server(postgres_run: tuple[Outcome, list[dict[str, Any]]]) -> None:
    done, _ = postgres_run
    assert done.answer["sources"][0]["meta"]["path"] == ANSWERING_DOC


# -- the embedded stores, run twice ----------------------------------------------------------

STORES: dict[str, Callable[[RunResources], VectorStorePort]] = {
    "qdrant": lambda resources: QdrantStore(QdrantConfig(collection="chunks"), resources),
    "chroma": lambda resources: ChromaStore(ChromaConfig(collection="chunks"), resources),
    "lancedb": lambda resources: LanceDBStore(LanceDBConfig(table="chunks"), resources),
}
"""Each store variant (``examples/rag-<name>.yaml``) and its store as the example configures it."""


VANISHED = "docs/cli.md"
"""The document deleted before a store variant's third run."""


@dataclass(frozen=True)
class StoreOutcome:
    """A store variant run twice, queried, then run once more without one document; the rows after each run."""

    first: Outcome
    second: dict[str, Any]
    third: dict[str, Any]
    rows: tuple[int, int, int]
    corpus: int


def stored_rows(name: str, project: Path) -> int:
    """The rows the example's store holds, read through its adapter once the runs are over."""

    async def count() -> int:
        async with RunResources(project / "examples" / ".funcpipe") as resources:
            res = await STORES[name](resources).count()()
        assert isinstance(res, Ok), res
        return res.value

    return asyncio.run(count())


def _run_store(name: str, root: Path) -> StoreOutcome:
    example = f"rag-{name}.yaml"
    project = project_for(root, example)
    spec = str(project / "examples" / example)
    first = funcpipe("run", spec, "--report", str(project / "report.json"), environ=env())
    after_first = stored_rows(name, project) if first.returncode == 0 else -1
    second = funcpipe("run", spec, "--report", str(project / "second.json"), environ=env())
    assert second.returncode == 0, second.stderr
    second_report = json.loads((project / "second.json").read_text(encoding="utf-8"))
    asked = funcpipe("query", spec, QUESTION, "--json", environ=env())
    after_second = stored_rows(name, project)
    corpus = len(corpus_paths(project))
    (project / VANISHED).unlink()
    third = funcpipe("run", spec, "--report", str(project / "third.json"), environ=env())
    assert third.returncode == 0, third.stderr
    third_report = json.loads((project / "third.json").read_text(encoding="utf-8"))
    rows = (after_first, after_second, stored_rows(name, project))
    return StoreOutcome(outcome(project, first, asked), second_report, third_report, rows, corpus)


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StoreOutcome]:
    """Every store variant run twice and queried, the variants side by side (each its own project)."""
    with ThreadPoolExecutor(len(STORES)) as pool:
        futures = {name: pool.submit(_run_store, name, tmp_path_factory.mktemp(name)) for name in STORES}
        return {name: future.result() for name, future in futures.items()}


def _stage(report: dict[str, Any], stage: str) -> dict[str, Any]:
    return next(s for s in report["stages"] if s["id"] == stage)


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_variant_stores_every_chunk_once(name: str, store_runs: dict[str, StoreOutcome]) -> None:
    done = store_runs[name]
    accounting = done.first.report["accounting"]
    assert accounting["done"] == accounting["sources"] == done.corpus
    assert done.first.report["dead_lettered"] == 0
    assert done.rows[0] == _stage(done.first.report, "chunk")["outputs"] > 0


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_variant_second_run_embeds_nothing_and_adds_no_rows(
    name: str, store_runs: dict[str, StoreOutcome]
) -> None:
    done = store_runs[name]
    embed = _stage(done.second, "embed")
    assert (embed["inputs"], embed["calls"]) == (0, 0)
    assert done.second["accounting"]["skipped"] == done.first.report["accounting"]["sources"]
    assert done.rows[1] == done.rows[0]


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_variant_deletes_the_rows_of_a_deleted_document(name: str, store_runs: dict[str, StoreOutcome]) -> None:
    done = store_runs[name]
    accounting = done.third["accounting"]
    assert accounting["deleted"] == 1
    assert accounting["deleted_chunks"] > 0
    assert done.rows[2] == done.rows[1] - accounting["deleted_chunks"]


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_variant_answers_from_the_section_that_answers(name: str, store_runs: dict[str, StoreOutcome]) -> None:
    assert store_runs[name].first.answer["sources"][0]["meta"]["path"] == ANSWERING_DOC


@pytest.mark.parametrize("name", sorted(STORES))
def test_store_variant_keeps_its_data_under_the_state_dir_and_starts_no_postgres(
    name: str, store_runs: dict[str, StoreOutcome]
) -> None:
    state = store_runs[name].first.project / "examples" / ".funcpipe"
    assert (state / name).is_dir()
    assert not (state / "pgdata").exists()


# -- a rejected key ------------------------------------------------------------------------


def test_a_rejected_key_is_dead_lettered_as_auth_without_the_key(tmp_path: Path) -> None:
    project = project_for(tmp_path, "rag-openai.yaml")
    # This server echoes a wrong key in full in its 401 message, as some compatible servers do.
    with OpenAIServer(api_key="sk-the-right-key-0000", echo_key=True) as server:
        environ = env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=CANARY)
        ran = funcpipe("run", str(project / "examples" / "rag-openai.yaml"), environ=environ)
    dead = project / "examples" / ".funcpipe" / "rag.dead.jsonl"
    assert ran.returncode == 1, ran.stderr
    assert {json.loads(line)["error"]["code"] for line in dead.read_text(encoding="utf-8").splitlines()} == {"AUTH"}
    assert CANARY not in ran.stdout + ran.stderr
    assert files_containing(project, CANARY) == []
