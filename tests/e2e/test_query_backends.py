"""``funcpipe query`` through each generation backend, against its local server.

The main job is ingested once (its wordllama embedder, embedded pgvector); each
backend's spec is ``pipelines/rag.yaml`` with its ``llm:`` line switched,
beside it, so every query reads the same stored chunks. The servers record
what they received: the path, the headers and the body each API requires.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests.e2e._support import (
    ANSWERING_DOC,
    CANARY,
    QUESTION,
    RAG,
    changed_lines,
    env,
    funcpipe,
    make_project,
    replace_line,
)
from tests.fakes import AnthropicServer, FakeServer, OllamaServer, OpenAIServer, Recorded

ANSWER = "Change the kind: line of the embedding adapter [1]."


def reply(prompt: str) -> str:
    """What every model answers."""
    return ANSWER


@dataclass(frozen=True)
class Backend:
    """A generation backend: its ``llm:`` line, its server, and the settings it reads from the environment."""

    line: str
    server: Callable[[], FakeServer]
    url_env: str
    key_env: str | None
    path: str


BACKENDS: dict[str, Backend] = {
    "openai": Backend(
        '  llm: {kind: openai, model: gpt-4o-mini, base_url: "${OPENAI_BASE_URL}"}',
        lambda: OpenAIServer(api_key=CANARY, models=["gpt-4o-mini"], reply=reply),
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "/v1/chat/completions",
    ),
    "anthropic": Backend(
        '  llm: {kind: anthropic, model: claude-sonnet-4-5, base_url: "${ANTHROPIC_BASE_URL}"}',
        lambda: AnthropicServer(api_key=CANARY, models=["claude-sonnet-4-5"], reply=reply),
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "/v1/messages",
    ),
    "ollama": Backend(
        '  llm: {kind: ollama, model: llama3.2, base_url: "${OLLAMA_BASE_URL}"}',
        lambda: OllamaServer(models=["llama3.2"], reply=reply),
        "OLLAMA_BASE_URL",
        None,
        "/api/chat",
    ),
}


@dataclass(frozen=True)
class Asked:
    """One backend's two queries (``--json`` and text) and what its server received."""

    as_json: CompletedProcess[str]
    as_text: CompletedProcess[str]
    requests: list[Recorded]

    @property
    def answer(self) -> dict[str, Any]:
        """The ``--json`` output."""
        parsed: dict[str, Any] = json.loads(self.as_json.stdout)
        return parsed

    @property
    def call(self) -> Recorded:
        """The request of the ``--json`` query."""
        return self.requests[0]

    @property
    def prompt(self) -> str:
        """The prompt the ``--json`` query sent, as the single user message."""
        messages = self.call.json()["messages"]
        assert [m["role"] for m in messages] == ["user"]
        content: str = messages[0]["content"]
        return content


def spec_text(backend: str) -> str:
    """``pipelines/rag.yaml`` with the ``llm:`` line of ``backend``."""
    return replace_line(RAG.read_text(encoding="utf-8"), "  llm:", BACKENDS[backend].line)


def backend_env(backend: str, url: str) -> dict[str, str]:
    """The environment a query through ``backend`` at ``url`` runs with."""
    b = BACKENDS[backend]
    return env(**{b.url_env: url}, **({b.key_env: CANARY} if b.key_env else {}))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy whose main job has run once."""
    specs = {"pipelines/rag.yaml": RAG.read_text(encoding="utf-8")}
    specs |= {f"pipelines/rag-{name}.yaml": spec_text(name) for name in BACKENDS}
    root = make_project(tmp_path_factory.mktemp("query"), specs)
    ran = funcpipe("run", str(root / "pipelines" / "rag.yaml"), "--quiet")
    assert ran.returncode == 0, ran.stderr
    return root


@pytest.fixture(scope="module")
def asked(project: Path) -> Callable[[str], Asked]:
    """Query through a backend on first request; later requests reuse the outcome."""
    done: dict[str, Asked] = {}

    def get(name: str) -> Asked:
        if name not in done:
            spec = str(project / "pipelines" / f"rag-{name}.yaml")
            with BACKENDS[name].server() as server:
                environ = backend_env(name, server.url)
                as_json = funcpipe("query", spec, QUESTION, "--json", environ=environ)
                as_text = funcpipe("query", spec, QUESTION, environ=environ)
                requests = list(server.requests)
            assert as_json.returncode == 0, as_json.stderr
            assert as_text.returncode == 0, as_text.stderr
            done[name] = Asked(as_json, as_text, requests)
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_spec_differs_from_rag_by_its_llm_line(name: str) -> None:
    changes = changed_lines(RAG.read_text(encoding="utf-8"), spec_text(name))
    assert [new for _, new in changes] == [BACKENDS[name].line]


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_query_calls_the_backend_once_per_question_at_its_path(name: str, asked: Callable[[str], Asked]) -> None:
    requests = asked(name).requests
    assert [(r.method, r.path) for r in requests] == [("POST", BACKENDS[name].path)] * 2


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_json_output_holds_the_models_answer_and_the_retrieved_sources(
    name: str, asked: Callable[[str], Asked]
) -> None:
    answer = asked(name).answer
    assert answer["answer"] == ANSWER
    assert answer["question"] == QUESTION
    assert answer["sources"][0]["meta"]["path"] == ANSWERING_DOC


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_json_output_holds_the_token_usage_the_api_reported(name: str, asked: Callable[[str], Asked]) -> None:
    done = asked(name)
    # The servers count words, as they document.
    assert done.answer["usage"] == {"input_tokens": len(done.prompt.split()), "output_tokens": len(ANSWER.split())}


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_text_output_prints_the_answer_then_its_sources(name: str, asked: Callable[[str], Asked]) -> None:
    out = asked(name).as_text.stdout
    assert out.startswith(ANSWER + "\n\nSources:\n")
    # The source, and the section the passage sits in.
    assert f"  [1] {ANSWERING_DOC} § How do I switch the embedding provider? (score " in out


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_prompt_is_the_spec_template_rendered_with_the_question_and_chunks(
    name: str, asked: Callable[[str], Asked]
) -> None:
    done = asked(name)
    sources = done.answer["sources"]
    assert done.prompt.startswith("Answer the question using only the context below, and cite the passages.\n")
    for i, source in enumerate(sources, start=1):
        assert f"[{i}] {source['text']}\n" in done.prompt
    assert done.prompt.rstrip("\n").endswith(f"Question: {QUESTION}")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_query_never_shows_the_key(name: str, asked: Callable[[str], Asked]) -> None:
    done = asked(name)
    printed = done.as_json.stdout + done.as_json.stderr + done.as_text.stdout + done.as_text.stderr
    assert CANARY not in printed


def test_openai_request_is_a_chat_completion_with_a_bearer_key(asked: Callable[[str], Asked]) -> None:
    call = asked("openai").call
    assert call.headers["authorization"] == f"Bearer {CANARY}"
    assert call.headers["content-type"] == "application/json"
    body = call.json()
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "gpt-4o-mini",
        "max_tokens": 512,
        "temperature": 0.0,
    }


def test_anthropic_request_is_a_messages_call_with_its_key_and_version_headers(
    asked: Callable[[str], Asked],
) -> None:
    call = asked("anthropic").call
    assert call.headers["x-api-key"] == CANARY
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in call.headers
    body = call.json()
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "temperature": 0.0,
    }


def test_ollama_request_is_a_non_streaming_chat_without_a_key(asked: Callable[[str], Asked]) -> None:
    call = asked("ollama").call
    assert "authorization" not in call.headers
    body = call.json()
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "llama3.2",
        "stream": False,
        "options": {"temperature": 0.0, "num_predict": 512},
    }


def test_a_rejected_key_fails_the_query_with_auth_and_never_shows_it(project: Path) -> None:
    # This server echoes a wrong key in full in its 401 message, as some compatible servers do.
    with OpenAIServer(api_key="sk-the-right-key-0000", echo_key=True) as server:
        spec = str(project / "pipelines" / "rag-openai.yaml")
        proc = funcpipe("query", spec, QUESTION, environ=backend_env("openai", server.url))
    assert proc.returncode == 1
    assert "generation with llm failed: AUTH" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr


def test_prompt_reading_an_undefined_variable_fails_validation_at_its_place(tmp_path: Path) -> None:
    text = RAG.read_text(encoding="utf-8").replace("{{ question }}", "{{ questoin }}")
    spec = tmp_path / "rag.yaml"
    spec.write_text(text, encoding="utf-8")
    proc = funcpipe("validate", str(spec))
    assert proc.returncode == 2
    # The copy's sources are not beside it (errors of their own); the prompt's error is located too.
    located = next(x for x in proc.stdout.splitlines() if ": query.prompt: " in x)
    place, _, message = located.partition(": query.prompt: ")
    file, line, col = place.rsplit(":", 2)
    lines = text.splitlines()
    first = next(i for i, x in enumerate(lines, start=1) if x.startswith("  prompt: |"))
    last = next(i for i, x in enumerate(lines, start=1) if "{{ questoin }}" in x)
    assert (file, first <= int(line) <= last, int(col) >= 1) == (str(spec), True, True)
    assert message == "the template reads 'questoin', which is not defined at run time (did you mean 'question'?)"


def test_query_refuses_a_prompt_reading_an_undefined_variable_before_calling_anything(tmp_path: Path) -> None:
    spec = tmp_path / "rag.yaml"
    spec.write_text(RAG.read_text(encoding="utf-8").replace("{{ question }}", "{{ questoin }}"), encoding="utf-8")
    proc = funcpipe("query", str(spec), QUESTION)
    assert proc.returncode == 2
    assert "query.prompt: the template reads 'questoin'" in proc.stderr
    assert not (tmp_path / ".funcpipe").exists()
