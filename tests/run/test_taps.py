"""RunOptions.taps see what every stage emits; RunOptions.adapters lets a query read what a run stored in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from funcpipe.compile import compile_pipeline
from funcpipe.core import Item
from funcpipe.run import Runner, RunOptions, drive
from funcpipe.run.query import answer_question
from funcpipe.spec import load_spec
from funcpipe.testing import VirtualEventLoop

SPEC = """\
version: 1
name: taps
adapters:
  embedder: {kind: hashing, dim: 32}
  store: {kind: memory}
  llm: {kind: extractive}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: embed, use: embed, adapter: embedder}
  - {id: store, use: vector.upsert, adapter: store}
query: {top_k: 1, adapter: llm, prompt: "{{ question }}"}
"""


def test_taps_see_every_item_and_a_query_reads_the_runs_memory_store(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("apples are fruit", encoding="utf-8")
    (tmp_path / "docs" / "b.md").write_text("boats float on water", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(SPEC, encoding="utf-8")
    compiled = compile_pipeline(load_spec(tmp_path / "p.yaml"))
    seen: list[tuple[str, str]] = []

    def tap(stage_id: str, item: Item) -> None:
        seen.append((stage_id, str(item.meta.get("path"))))

    async def main() -> tuple[str, str]:
        shared: dict[str, object] = {}
        options = RunOptions(state_dir=tmp_path / "state", taps=[tap], adapters=shared, notify=lambda _m: None)
        report = await Runner(compiled, options).run()
        answer = await answer_question(compiled, "what floats?", options=RunOptions(adapters=shared))
        loop = asyncio.get_running_loop()
        return report.status, f"{answer.hits[0].meta.get('path')} on {type(loop).__name__}"

    status, found = drive(main, loop_factory=VirtualEventLoop)

    assert status == "ok"
    assert found == "b.md on VirtualEventLoop"
    assert sorted(seen) == sorted((s, p) for s in ("load", "embed", "store") for p in ("a.md", "b.md"))
