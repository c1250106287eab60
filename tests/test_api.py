"""The root Python API: `funcpipe.load` -> `Pipeline` runs, queries, draws and estimates as the CLI does."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import funcpipe
from funcpipe import Event, Pipeline, load
from tests.pg import shared_dsn, unique_name

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
version: 1
name: notes
description: Three notes into an in-process store.
params: {corpus: notes}
adapters:
  embedder: {kind: hashing, dim: 64}
  store: {kind: memory}
stages:
  - {id: load, use: source.files, with: {path: "{{ params.corpus }}", glob: "*.md"}}
  - {id: chunk, use: text.chunk, with: {size: 200, overlap: 20}}
  - {id: embed, use: embed, adapter: embedder}
  - {id: store, use: vector.upsert, adapter: store}
"""


def _project(root: Path, spec: str = SPEC, corpus: str = "notes", files: int = 3) -> Path:
    (root / corpus).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / corpus / f"n{i}.md").write_text(f"# Note {i}\n\nSome words about note number {i}.\n")
    path = root / "notes.yaml"
    path.write_text(spec)
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    return _project(tmp_path)


def test_load_describes_the_pipeline(spec: Path) -> None:
    pipeline = load(spec)
    assert isinstance(pipeline, Pipeline)
    assert (pipeline.name, pipeline.description, pipeline.path) == (
        "notes",
        "Three notes into an in-process store.",
        spec,
    )
    assert [(s.id, s.use, s.adapter, s.inputs) for s in pipeline.stages] == [
        ("load", "source.files", None, ()),
        ("chunk", "text.chunk", None, ("load",)),
        ("embed", "embed", "embedder", ("chunk",)),
        ("store", "vector.upsert", "store", ("embed",)),
    ]


def test_run_returns_the_report_and_a_second_run_skips_what_is_done(spec: Path) -> None:
    pipeline = load(spec)
    first = pipeline.run()
    assert (first.status, first.exit_code, first.accounting["done"]) == ("ok", 0, 3)
    assert json.loads((spec.parent / ".funcpipe" / "notes.report.json").read_text())["run_id"] == first.run_id
    second = pipeline.run()
    assert (second.accounting["done"], second.accounting["skipped"]) == (0, 3)
    assert pipeline.run(fresh=True).accounting["done"] == 3


def test_a_run_that_cannot_start_raises_a_run_error(spec: Path) -> None:
    (spec.parent / "blocker").write_text("a file where the state directory should be")
    with pytest.raises(funcpipe.RunError, match="cannot write the state directory") as info:
        load(spec).run(state_dir=spec.parent / "blocker")
    assert info.value.exit_code == 1


def test_report_path_and_state_dir_are_used(spec: Path, tmp_path: Path) -> None:
    report = load(spec).run(report_path=tmp_path / "out" / "r.json", state_dir=tmp_path / "state")
    assert json.loads((tmp_path / "out" / "r.json").read_text())["run_id"] == report.run_id
    assert (tmp_path / "state" / "notes.report.json").is_file()
    assert not (spec.parent / ".funcpipe").exists()


def test_listeners_and_on_event_receive_every_event(spec: Path) -> None:
    seen: list[Event] = []
    also: list[str] = []
    load(spec).run(listeners=[seen.append], on_event=lambda ev: also.append(ev.kind))
    assert seen
    assert [ev.kind for ev in seen] == also
    assert {ev.stage for ev in seen if ev.kind == "attempt"} == {"embed", "store"}


def test_a_session_counts_live_shows_on_displays_and_runs_once(spec: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[str] = []
            self.notices: list[str] = []

        def __call__(self, event: Event, /) -> None:
            self.events.append(event.kind)

        def notice(self, message: str, /) -> None:
            self.notices.append(message)

    session = load(spec).session()
    display = Recorder()
    session.attach(display)
    assert session.report is None
    assert {sid: st.outputs for sid, st in session.stats.items()} == {"load": 0, "chunk": 0, "embed": 0, "store": 0}
    report = session.run()
    assert session.report is report
    assert session.stats["load"].outputs == 3
    assert session.stats["store"].outputs == report.stages[-1].outputs
    assert "attempt" in display.events
    with pytest.raises(RuntimeError, match="runs once"):
        session.run()
    with pytest.raises(RuntimeError, match="before the run starts"):
        session.attach(Recorder())


def test_run_refuses_inside_a_running_loop_and_run_async_works_there(spec: Path) -> None:
    pipeline = load(spec)

    async def main() -> str:
        with pytest.raises(RuntimeError, match=re.escape("await pipeline.run_async()")):
            pipeline.run()
        with pytest.raises(RuntimeError, match=re.escape("await pipeline.query_async()")):
            pipeline.query("anything")
        return (await pipeline.run_async()).status

    assert asyncio.run(main()) == "ok"


def test_an_unknown_run_option_is_a_type_error_that_suggests(spec: Path) -> None:
    with pytest.raises(TypeError, match="unknown run option 'frsh' \\(did you mean 'fresh'\\?\\)"):
        load(spec).run(frsh=True)  # type: ignore[call-arg]


def test_set_takes_strings_or_a_mapping(spec: Path) -> None:
    by_string = load(spec, set=["stages[1].with.size=100"])
    by_mapping = load(spec, set={"stages[1].with.size": 100})
    one = load(spec, set="stages[1].with.size=100")
    assert by_string.fingerprint == by_mapping.fingerprint == one.fingerprint != load(spec).fingerprint
    assert by_mapping.compiled.stages[1].config.size == 100  # type: ignore[attr-defined]


def test_params_take_a_file_or_a_mapping_and_set_wins(spec: Path, tmp_path: Path) -> None:
    _project(tmp_path, corpus="other", files=5)
    spec.write_text(SPEC)  # _project rewrote it: the same text
    (tmp_path / "params.yaml").write_text("corpus: other\n")
    assert load(spec, params=tmp_path / "params.yaml").estimate().stages[0].outputs == 5
    assert load(spec, params={"corpus": "other"}).estimate().stages[0].outputs == 5
    assert load(spec, params={"corpus": "other"}, set={"params.corpus": "notes"}).estimate().stages[0].outputs == 3


def test_a_params_mapping_merges_nested_mappings(tmp_path: Path) -> None:
    text = SPEC.replace("params: {corpus: notes}", "params: {corpus: notes, src: {glob: '*.txt', deep: true}}")
    text = text.replace('glob: "*.md"', 'glob: "{{ params.src.glob }}"')
    spec = _project(tmp_path, spec=text)
    assert load(spec).estimate().stages[0].outputs == 0
    assert load(spec, params={"src": {"glob": "*.md"}}).estimate().stages[0].outputs == 3


def test_a_params_mapping_refuses_what_a_spec_cannot_hold(spec: Path) -> None:
    with pytest.raises(TypeError, match=re.escape("params.corpus")):
        load(spec, params={"corpus": object()})
    with pytest.raises(ValueError, match=re.escape("'a.b'")):
        load(spec, params={"a.b": 1})


def test_env_is_what_variables_read(tmp_path: Path) -> None:
    spec = _project(tmp_path, spec=SPEC.replace("dim: 64", "dim: '${DIM}'"))
    assert load(spec, env={"DIM": "32"}).fingerprint != load(spec, env={"DIM": "64"}).fingerprint
    with pytest.raises(funcpipe.SpecErrors) as info:
        load(spec, env={})
    assert [(e.path, e.line) for e in info.value.errors] == [("adapters.embedder.dim", 6)]


def test_a_wrong_spec_raises_every_error_located(tmp_path: Path) -> None:
    spec = _project(tmp_path, spec=SPEC.replace("use: text.chunk", "use: text.chunck").replace("dim: 64", "dim: 2"))
    with pytest.raises(funcpipe.SpecErrors) as info:
        load(spec)
    assert info.value.exit_code == 2
    assert sorted((e.file, e.line, e.path) for e in info.value.errors) == [
        (str(spec), 6, "adapters.embedder.dim"),
        (str(spec), 10, "stages[1].use"),
    ]
    assert all(e.hint for e in info.value.errors if e.path == "stages[1].use")


def test_check_reports_instead_of_raising(tmp_path: Path) -> None:
    spec = _project(tmp_path, spec=SPEC.replace("dim: 64", "dim: '${DIM}'"))
    lint = funcpipe.check(spec, env={})
    assert (lint.valid, lint.unset, lint.name, lint.stages) == (True, ("DIM",), "notes", 4)
    deploy = funcpipe.check(spec, env={}, check_env=True)
    assert not deploy.valid
    assert [e.path for e in deploy.errors] == ["adapters.embedder.dim"]


def test_a_missing_source_directory_is_checked_at_load_unless_told_not_to(tmp_path: Path) -> None:
    spec = _project(tmp_path, spec=SPEC.replace('"{{ params.corpus }}"', "notes"))
    shutil.rmtree(tmp_path / "notes")
    with pytest.raises(funcpipe.SpecErrors):
        load(spec)
    pipeline = load(spec, check_sources=False)
    assert pipeline.render("mermaid").startswith("flowchart LR")
    report = pipeline.run()  # the run checks again, and does nothing
    assert (report.status, report.exit_code, report.accounting["sources"]) == ("error", 2, 0)
    assert report.message is not None
    assert "notes" in report.message


def test_render_gives_text_for_text_formats(spec: Path) -> None:
    pipeline = load(spec)
    mermaid = pipeline.render()
    assert isinstance(mermaid, str)
    assert mermaid.startswith("flowchart LR")
    assert isinstance(pipeline.render("dot"), str)
    html = pipeline.render("html")
    assert isinstance(html, str)
    assert html.startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match="mermaid"):
        pipeline.render("gif")


def test_estimate_is_the_dry_runs_plan_as_a_value(spec: Path) -> None:
    plan = load(spec).estimate(latency=0.5)
    assert (plan.pipeline, plan.latency) == ("notes", 0.5)
    assert [(s.id, s.outputs) for s in plan.stages][:2] == [("load", 3), ("chunk", 3)]
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--dry-run", "--log-format", "json", "--latency", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(proc.stdout) == plan.to_json()
    assert plan.to_json()["least_duration_s"] == plan.least_duration


def test_estimate_prints_the_dry_run_tables(spec: Path) -> None:
    import io

    out = io.StringIO()
    load(spec).estimate().print(out)
    assert "funcpipe run --dry-run notes: nothing was called" in out.getvalue()
    assert "least duration:" in out.getvalue()


def test_query_answers_from_what_the_run_stored(tmp_path: Path) -> None:
    text = SPEC.replace(
        "store: {kind: memory}", f"store: {{kind: pgvector, dsn: '${{TEST_DSN}}', table: {unique_name('api')}}}"
    )
    text += "query: {top_k: 2, adapter: llm}\n"
    text = text.replace("adapters:\n", "adapters:\n  llm: {kind: extractive}\n")
    spec = _project(tmp_path, spec=text)
    (tmp_path / "notes" / "n1.md").write_text("# Switching\n\nTo switch the embedding provider, change one line.\n")
    pipeline = load(spec, env={"TEST_DSN": shared_dsn()})
    assert pipeline.run().exit_code == 0
    answer = pipeline.query("how do I switch the embedding provider?")
    assert len(answer.hits) == 2
    assert answer.hits[0].meta["path"] == "n1.md"
    assert "change one line" in answer.text
    assert len(pipeline.query("switch provider", top_k=1).hits) == 1
    assert answer.to_json()["question"] == "how do I switch the embedding provider?"


def test_query_without_a_query_section_is_a_spec_error(spec: Path) -> None:
    with pytest.raises(funcpipe.SpecError, match="no query: section"):
        load(spec).query("anything")


# -- the main job, and docs/python.md, as a user runs them ----------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A fresh copy of what the main job reads: README.md, docs/ and pipelines/rag.yaml."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "README.md", root / "README.md")
    (root / "pipelines").mkdir()
    shutil.copy(REPO / "pipelines" / "rag.yaml", root / "pipelines" / "rag.yaml")
    return root


def _python(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_one_liner_does_the_main_job(checkout: Path) -> None:
    proc = _python('from funcpipe import load; load("pipelines/rag.yaml").run()', checkout)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((checkout / "pipelines" / ".funcpipe" / "rag.report.json").read_text())
    expected = {"README.md"} | {f"docs/{p.name}" for p in (checkout / "docs").glob("*.md")}
    assert (report["status"], report["accounting"]["done"]) == ("ok", len(expected))
    assert report["accounting"]["invariant_holds"]
    query = _python(
        "from funcpipe import load\n"
        'a = load("pipelines/rag.yaml").query("how do I switch the embedding provider?")\n'
        "print(a.hits[0].meta['path'])\n",
        checkout,
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.strip() == "docs/providers.md"


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown document, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_the_examples_of_docs_python_md_run(checkout: Path) -> None:
    blocks = python_blocks((REPO / "docs" / "python.md").read_text())
    assert len(blocks) >= 8
    # One interpreter, block after block, as a reader pastes them.
    code = "\n".join(f"exec(compile({b!r}, 'docs/python.md block {i}', 'exec'))" for i, b in enumerate(blocks, 1))
    proc = _python(code, checkout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^(docs/\w+\.md|README\.md) \d\.\d{3}$", proc.stdout, flags=re.M)
    lines = []
    for x in proc.stdout.splitlines():
        if x.startswith('{"'):
            try:
                lines.append(json.loads(x))
            except ValueError:
                continue  # an answer quoting a JSON example of the docs, cut at the passage's end
    assert any(x.get("event") == "attempt" for x in lines)  # the session's JSON log
