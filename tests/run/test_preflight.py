"""Pre-flight, as a user sees it: unwritable outputs, missing keys and keys over plain http
stop ``funcpipe`` before any work, with one clear error and nothing done.

Every case is a real subprocess against a local OpenAI-compatible server that
would accept the run: "nothing done" is that server having received no
request, no sink file, no dead-letter file and no ledger row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.e2e._support import env, funcpipe
from tests.fakes import OpenAIServer

KEY = "sk-preflight-0123456789abcdef"

SPEC = """\
version: 1
name: pf
adapters:
  embedder: {kind: openai, model: text-embedding-3-small, base_url: "${OPENAI_BASE_URL}", request_timeout: 2s}
  store: {kind: memory}
  llm: {kind: extractive}
policies:
  api: {retry: {max_attempts: 2, backoff: {kind: immediate}}}
stages:
  - {id: load, use: source.files, with: {path: corpus, glob: "*.md"}}
  - {id: chunk, use: text.chunk, with: {size: 200, overlap: 20}}
  - {id: embed, use: embed, adapter: embedder, policy: api, batch: {size: 8}}
  - {id: out, use: sink.jsonl, with: {path: out/chunks.jsonl}}
query: {adapter: llm, embedder: embedder, store: store, top_k: 2}
on_error: {mode: continue}
"""

BLOCK = '''\
"""Replaces the --report directory by a file while the run is under way."""

import os
import shutil


def block(item):
    target = os.environ["PF_REPORT_DIR"]
    if os.path.isdir(target):
        shutil.rmtree(target)
        open(target, "w").close()
    return item.data
'''


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, dim=1536, models=["text-embedding-3-small"]) as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, server: OpenAIServer) -> Path:
    (tmp_path / "pf.yaml").write_text(SPEC, encoding="utf-8")
    (tmp_path / "corpus").mkdir()
    for name in ("a.md", "b.md"):
        (tmp_path / "corpus" / name).write_text(f"# {name}\n\nSome text about {name}.\n", encoding="utf-8")
    server.reset()
    return tmp_path


def environ(server: OpenAIServer, **extra: str) -> dict[str, str]:
    return env(**{"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY, **extra})


def output(proc: CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def ledger_rows(project: Path) -> int:
    path = project / ".funcpipe" / "ledger.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM settled").fetchone()[0])


def assert_nothing_done(project: Path, server: OpenAIServer) -> None:
    assert server.count() == 0, "a request reached the server"
    assert not (project / "out").exists(), "the sink wrote"
    assert not list(project.rglob("*.dead.jsonl")), "a dead-letter file was written"
    assert ledger_rows(project) == 0


def assert_one_clear_error(proc: CompletedProcess[str], code: int, *needles: str) -> None:
    text = output(proc)
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    assert KEY not in text


# -- outputs ---------------------------------------------------------------------------------


def test_the_run_works_when_everything_is_in_order(project: Path, server: OpenAIServer) -> None:
    proc = funcpipe("run", str(project / "pf.yaml"), "-q", environ=environ(server), timeout=120)
    assert proc.returncode == 0, output(proc)
    assert server.count() > 0
    assert (project / "out" / "chunks.jsonl").exists()


def test_a_dead_letter_path_under_a_file_stops_the_run_before_any_work(project: Path, server: OpenAIServer) -> None:
    (project / "blocker").write_text("in the way\n")
    proc = funcpipe(
        "run",
        str(project / "pf.yaml"),
        "--set",
        "on_error.dead_letter=blocker/dead.jsonl",
        environ=environ(server),
        timeout=60,
    )
    assert_one_clear_error(proc, 1, "dead-letter file", str(project / "blocker" / "dead.jsonl"), "not a directory")
    assert_nothing_done(project, server)


def test_a_dead_letter_path_that_is_a_directory_stops_the_run(project: Path, server: OpenAIServer) -> None:
    (project / "dead.jsonl").mkdir()
    proc = funcpipe(
        "run", str(project / "pf.yaml"), "--set", "on_error.dead_letter=dead.jsonl", environ=environ(server), timeout=60
    )
    assert_one_clear_error(proc, 1, "dead-letter file", str(project / "dead.jsonl"))
    assert_nothing_done(project, server)


def test_an_existing_dead_letter_file_is_kept_as_it_was(project: Path, server: OpenAIServer) -> None:
    dead = project / "kept.dead.jsonl"
    dead.write_text('{"old": 1}\n')
    proc = funcpipe(
        "run", str(project / "pf.yaml"), "-q", "--set", f"on_error.dead_letter={dead.name}", environ=environ(server)
    )
    assert proc.returncode == 0, output(proc)
    assert dead.read_text() == '{"old": 1}\n'


def test_an_unwritable_report_path_stops_the_run_before_any_work(project: Path, server: OpenAIServer) -> None:
    (project / "reports").write_text("a file, not a directory\n")
    report = project / "reports" / "run.json"
    proc = funcpipe("run", str(project / "pf.yaml"), "--report", str(report), environ=environ(server), timeout=60)
    assert_one_clear_error(proc, 1, "cannot write the report", str(report), "not a directory")
    assert_nothing_done(project, server)


def test_a_state_directory_that_cannot_be_made_stops_the_run(project: Path, server: OpenAIServer) -> None:
    (project / ".funcpipe").write_text("a file where the state directory goes\n")
    proc = funcpipe("run", str(project / "pf.yaml"), environ=environ(server), timeout=60)
    assert_one_clear_error(proc, 1, "state directory", str(project / ".funcpipe"), "not a directory")
    assert server.count() == 0
    assert not (project / "out").exists()


def test_every_unwritable_output_is_named_at_once(project: Path, server: OpenAIServer) -> None:
    (project / "blocker").write_text("x\n")
    proc = funcpipe(
        "run",
        str(project / "pf.yaml"),
        "--set",
        "on_error.dead_letter=blocker/d.jsonl",
        "--report",
        str(project / "blocker" / "r.json"),
        environ=environ(server),
        timeout=60,
    )
    assert_one_clear_error(proc, 1, "dead-letter file", "cannot write the report")
    assert_nothing_done(project, server)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_report_path_lost_during_the_run_is_told_without_a_traceback(
    log_format: str, project: Path, server: OpenAIServer
) -> None:
    (project / "block.py").write_text(BLOCK, encoding="utf-8")
    spec = SPEC.replace("  - {id: chunk,", '  - {id: block, use: map, with: {fn: "block:block"}}\n  - {id: chunk,')
    (project / "pf.yaml").write_text(spec, encoding="utf-8")
    reports = project / "reports"
    reports.mkdir()
    proc = funcpipe(
        "run",
        str(project / "pf.yaml"),
        "--log-format",
        log_format,
        "--report",
        str(reports / "run.json"),
        environ=environ(server, PF_REPORT_DIR=str(reports)),
    )
    assert_one_clear_error(proc, 1, "the report could not be written to", str(reports / "run.json"))
    assert reports.is_file()  # the callable did replace it
    # The work was done and the outcome is still reported, beside the state too.
    assert (project / "out" / "chunks.jsonl").exists()
    state = json.loads((project / ".funcpipe" / "pf.report.json").read_text())
    assert state["accounting"]["done"] == 2
    assert state["status"] == "ok"
    assert "the report could not be written to" in state["message"]
    if log_format == "json":
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        assert report["event"] == "report"
        assert report["accounting"]["done"] == 2
    else:
        assert "2 done" in proc.stderr


# -- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_a_missing_api_key_stops_the_run_before_the_first_call(
    value: str | None, project: Path, server: OpenAIServer
) -> None:
    variables = env(OPENAI_BASE_URL=server.url) if value is None else environ(server, OPENAI_API_KEY=value)
    proc = funcpipe("run", str(project / "pf.yaml"), environ=variables, timeout=60)
    assert_one_clear_error(proc, 1, "OPENAI_API_KEY", "'embedder'", "api_key_env")
    assert_nothing_done(project, server)


def test_a_missing_api_key_with_json_logs_is_the_same_one_error(project: Path, server: OpenAIServer) -> None:
    proc = funcpipe(
        "run", str(project / "pf.yaml"), "--log-format", "json", environ=env(OPENAI_BASE_URL=server.url), timeout=60
    )
    assert_one_clear_error(proc, 1, "OPENAI_API_KEY", "the openai default")
    assert '"event": "report"' not in proc.stderr  # nothing ran: no outcome to report
    assert_nothing_done(project, server)


def test_a_missing_key_named_by_the_spec_is_located_at_its_field(project: Path, server: OpenAIServer) -> None:
    spec = SPEC.replace("request_timeout: 2s}", "request_timeout: 2s, api_key_env: PF_EMBED_KEY}")
    (project / "pf.yaml").write_text(spec, encoding="utf-8")
    proc = funcpipe("run", str(project / "pf.yaml"), environ=environ(server), timeout=60)
    assert_one_clear_error(proc, 1, "PF_EMBED_KEY (its api_key_env)", "adapters.embedder.api_key_env")
    assert_nothing_done(project, server)


def test_a_key_only_the_query_needs_is_not_required_by_the_run(project: Path, server: OpenAIServer) -> None:
    spec = SPEC.replace("  llm: {kind: extractive}", "  llm: {kind: anthropic, model: claude-x}")
    (project / "pf.yaml").write_text(spec, encoding="utf-8")
    proc = funcpipe("run", str(project / "pf.yaml"), "-q", environ=environ(server), timeout=120)
    assert proc.returncode == 0, output(proc)


def test_query_names_the_missing_key_and_calls_nothing(project: Path, server: OpenAIServer) -> None:
    proc = funcpipe("query", str(project / "pf.yaml"), "what?", environ=env(OPENAI_BASE_URL=server.url), timeout=60)
    assert_one_clear_error(proc, 1, "OPENAI_API_KEY", "'embedder'")
    assert server.count() == 0


def test_query_names_the_generators_missing_key(project: Path, server: OpenAIServer) -> None:
    spec = SPEC.replace("  llm: {kind: extractive}", "  llm: {kind: anthropic, model: claude-x}")
    (project / "pf.yaml").write_text(spec, encoding="utf-8")
    proc = funcpipe("query", str(project / "pf.yaml"), "what?", environ=environ(server), timeout=60)
    assert_one_clear_error(proc, 1, "ANTHROPIC_API_KEY", "'llm'", "anthropic")
    assert server.count() == 0


# -- transport -------------------------------------------------------------------------------

TEST_NET = "http://192.0.2.1/v1"
"""TEST-NET-1 (RFC 5737): never routed, and never contacted by these tests."""


@pytest.mark.parametrize("command", ["run", "query", "graph", "dry-run"])
def test_a_key_over_plain_http_to_another_host_is_refused_before_connecting(
    command: str, project: Path, server: OpenAIServer
) -> None:
    args = {
        "run": ("run", str(project / "pf.yaml")),
        "query": ("query", str(project / "pf.yaml"), "what?"),
        "graph": ("graph", str(project / "pf.yaml")),
        "dry-run": ("run", str(project / "pf.yaml"), "--dry-run"),
    }[command]
    # A short subprocess timeout: were a connection tried, it would hang, not pass.
    proc = funcpipe(*args, environ=environ(server, OPENAI_BASE_URL=TEST_NET), timeout=30)
    assert_one_clear_error(proc, 2, "adapters.embedder.base_url", "192.0.2.1", "allow_insecure_http")
    assert "${OPENAI_BASE_URL}" in proc.stderr  # shown as written
    assert_nothing_done(project, server)
