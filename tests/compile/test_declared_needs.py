"""Compile reads what a stage kind declares (its embedder and sync fields), never a config field by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from funcpipe.compile import compile_pipeline
from funcpipe.errors import SpecErrors
from funcpipe.ports import VectorStorePort
from funcpipe.registry import REGISTRY, StageKind
from funcpipe.spec import load_spec_text
from tests.compile.declared_kinds import KeptConfig, RoutedConfig

SPEC = """
version: 1
name: declared
adapters:
  emb: {kind: hashing, dim: 8}
  other: {kind: hashing, dim: 8}
  db: {kind: memory}
stages:
  - {id: load, use: source.jsonl, with: {path: q.jsonl, allow_empty: true}}
  - {id: embed, use: embed, adapter: emb}
  - {id: ask, use: "tests.compile.declared_kinds:ROUTED", adapter: db, with: {via: other, embedder: emb}}
  - {id: plain, use: "tests.compile.declared_kinds:UNDECLARED", from: embed, with: {embedder: other}}
  - {id: keep, use: "tests.compile.declared_kinds:KEPT", adapter: db, from: embed}
"""


def test_the_declared_embedder_field_names_the_embedder(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    assert p.stage("ask").embedder == "other"  # `via`, not the field called `embedder`


def test_a_field_called_embedder_means_nothing_unless_declared(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    assert p.stage("plain").embedder == "emb"  # the nearest upstream embedder


def test_the_declared_sync_field_gives_the_sync_mode(tmp_path: Path) -> None:
    p = compile_pipeline(load_spec_text(SPEC, base_dir=tmp_path))
    assert [(s.stage, s.mode) for s in p.syncs] == [("keep", "append")]  # `keep`, not `sync`


def test_the_declared_embedder_field_is_checked_as_a_reference(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec_text(SPEC.replace("via: other", "via: othr"), base_dir=tmp_path)
    (error,) = info.value.errors
    assert error.path == "stages[2].with.via"
    assert "did you mean 'other'?" in str(error)


def test_the_declared_embedder_must_provide_embedding(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as info:
        load_spec_text(SPEC.replace("via: other", "via: db"), base_dir=tmp_path)
    (error,) = info.value.errors
    assert error.path == "stages[2].with.via"
    assert "needs embedding" in str(error)


def test_an_undeclared_field_called_embedder_is_not_a_reference(tmp_path: Path) -> None:
    loaded = load_spec_text(
        SPEC.replace("with: {embedder: other}", "with: {embedder: no-such-adapter}"), base_dir=tmp_path
    )
    assert loaded.stage_configs["plain"].embedder == "no-such-adapter"  # type: ignore[attr-defined]


def test_the_built_in_kinds_declare_their_fields() -> None:
    kinds = REGISTRY.stages.items()
    fields = {n: (k.embedder_field, k.sync_field, k.callable_field) for n, k in kinds}
    assert {n: f for n, f in fields.items() if any(f)} == {
        "vector.query": ("embedder", None, None),
        "vector.upsert": (None, "sync", None),
        "map": (None, None, "fn"),
        "filter": (None, None, "fn"),
    }


CALLER = """
version: 1
name: caller
stages:
  - {id: load, use: source.jsonl, with: {path: q.jsonl, allow_empty: true}}
  - {id: call, use: "tests.compile.declared_kinds:CALLER", with: {call: "TARGET", fn: "OTHER"}}
"""


def test_the_declared_callable_field_is_checked_importable(tmp_path: Path) -> None:
    text = CALLER.replace("TARGET", "tests.compile.declared_kinds:nope").replace("OTHER", "not.imported:either")
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text, base_dir=tmp_path)
    (error,) = info.value.errors  # `fn` is not the declared field: it is not imported
    assert error.path == "stages[1].with.call"
    assert "has no attribute 'nope'" in error.message


def test_a_declared_callable_that_imports_passes(tmp_path: Path) -> None:
    text = CALLER.replace("TARGET", "tests.compile.declared_kinds:RoutedConfig").replace("OTHER", "x")
    config = load_spec_text(text, base_dir=tmp_path).stage_configs["call"]
    assert config.call == "tests.compile.declared_kinds:RoutedConfig"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embedder": True, "embedder_field": "nope"}, "embedder_field='nope' is not a field of RoutedConfig"),
        ({"embedder_field": "via"}, "embedder_field needs embedder=True"),
        ({"needs": VectorStorePort, "sync_field": "nope"}, "sync_field='nope' is not a field of RoutedConfig"),
        ({"sync_field": "via"}, "sync_field needs needs=VectorStorePort"),
        ({"callable_field": "nope"}, "callable_field='nope' is not a field of RoutedConfig"),
    ],
)
def test_a_declaration_that_cannot_hold_fails_where_the_kind_is_declared(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="stage kind 'x'") as info:
        StageKind("x", RoutedConfig, "m:f", **changes)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_reading_a_declared_field_gives_none_for_values_that_are_not_names() -> None:
    kind = StageKind("x", RoutedConfig, "m:f", embedder=True, embedder_field="via")
    assert kind.named_embedder(RoutedConfig()) is None
    assert kind.named_embedder(RoutedConfig(via="e")) == "e"
    store = StageKind("y", KeptConfig, "m:f", needs=VectorStorePort, sync_field="keep")
    assert store.sync_mode(KeptConfig(keep="mirror")) == "mirror"
    assert StageKind("z", KeptConfig, "m:f").sync_mode(KeptConfig()) is None
