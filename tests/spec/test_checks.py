"""Kinds, references, ports and the stage graph (funcpipe/spec/_checks.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from funcpipe.errors import SpecErrors
from funcpipe.spec import load_spec
from tests.spec._support import MINIMAL, errors_of, load, only_error

ADAPTERS = """\
adapters:
  local: {kind: hashing}
  other: {kind: openai, model: m}
  mem: {kind: memory}
"""


def test_a_user_module_beside_the_spec_is_importable_and_the_path_restored(
    tmp_path: Path,
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")  # what MINIMAL's source reads
    (tmp_path / "beside_mod_a.py").write_text("def f(item):\n    return item.data\n")
    spec = tmp_path / "p.yaml"
    spec.write_text(MINIMAL + "  - {id: m, use: 'beside_mod_a:f'}\n", encoding="utf-8")
    before = list(sys.path)
    assert load_spec(spec, env={}).inputs["m"] == ("load",)
    assert sys.path == before


def test_a_user_module_that_raises_on_import_is_a_located_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")  # what MINIMAL's source reads
    (tmp_path / "beside_mod_b.py").write_text("raise RuntimeError('boom')\n")
    text = MINIMAL + "  - {id: m, use: 'beside_mod_b:f'}\n"
    error = only_error(text, base_dir=tmp_path)
    assert (error.line, error.col) == (5, 18)
    assert "RuntimeError: boom" in error.message


def test_a_map_target_that_is_not_callable_is_an_error() -> None:
    error = only_error(MINIMAL + "  - {id: m, use: map, with: {fn: 'json:__name__'}}\n")
    assert "'json:__name__' is not callable" in error.message


def test_a_cycle_is_reported_once() -> None:
    text = MINIMAL + (
        "  - {id: a, use: text.clean, from: c}\n"
        "  - {id: b, use: text.clean, from: a}\n"
        "  - {id: c, use: text.clean, from: b}\n"
        "  - {id: d, use: text.clean, from: [a, c]}\n"
    )
    (error,) = errors_of(text)
    assert "a -> c -> b -> a" in error.message


def test_a_missing_adapter_hint_names_the_adapters_that_fit() -> None:
    error = only_error(MINIMAL + "  - {id: e, use: embed}\n" + ADAPTERS)
    assert error.hint == "add `adapter:` naming one of: local, other"


def test_the_query_defaults_come_from_the_embed_and_upsert_stages() -> None:
    text = (
        MINIMAL
        + "  - {id: e, use: embed, adapter: local}\n"
        + "  - {id: s, use: vector.upsert, adapter: mem}\n"
        + ADAPTERS
        + "query: {adapter: other}\n"
    )
    assert load(text).spec.query is not None


def test_a_query_may_name_its_embedder_and_store() -> None:
    text = MINIMAL + ADAPTERS + "query: {adapter: other, embedder: other, store: mem}\n"
    assert load(text).spec.query is not None


def test_stages_after_an_unknown_kind_are_still_checked() -> None:
    text = MINIMAL + "  - {id: x, use: nope}\n  - {id: y, use: embed, adapter: ghost}\n"
    assert [e.path for e in errors_of(text)] == ["stages[1].use", "stages[2].adapter"]


def test_an_invalid_adapter_does_not_hide_stage_errors() -> None:
    text = MINIMAL + "  - {id: x, use: text.chunk, with: {size: 1}}\nadapters:\n  a: {kind: x}\n"
    assert [e.path for e in errors_of(text)] == ["stages[1].with.size", "adapters.a.kind"]


def test_commands_that_read_no_source_do_not_check_source_paths(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "version: 1\nname: p\nstages:\n  - {id: load, use: source.files, with: {path: gone}}\n"
        "  - {id: out, use: sink.jsonl, with: {path: out.jsonl}}\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecErrors) as exc:
        load_spec(spec)
    assert [e.path for e in exc.value.errors] == ["stages[0].with.path"]
    assert load_spec(spec, check_sources=False).spec.name == "p"
    graph = subprocess.run(
        [sys.executable, "-m", "funcpipe", "graph", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert graph.returncode == 0 and "load" in graph.stdout, graph.stderr
    validate = subprocess.run(
        [sys.executable, "-m", "funcpipe", "validate", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert validate.returncode == 2 and "stages[0].with.path" in validate.stderr + validate.stdout
