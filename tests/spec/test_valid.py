"""The valid-spec corpus loads, and together it uses every field of the language."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from funcpipe.registry import REGISTRY
from funcpipe.spec import load_spec
from funcpipe.spec._yaml import parse_yaml
from funcpipe.spec.models import PipelineSpec
from funcpipe.stages.imports import importable
from tests.spec._support import VALID


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_spec_loads(path: Path) -> None:
    assert load_spec(path, env={}).spec.version == 1


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_spec_declares_the_schema_for_editors(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../../../schemas/funcpipe.schema.json"


def _models(tp: Any) -> list[type[BaseModel]]:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType or origin is not None:
        return [m for arg in get_args(tp) for m in _models(arg)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _used(model: type[BaseModel], data: Any, seen: set[tuple[str, str]]) -> None:
    """Record (model, field) for every field ``data`` sets, recursing into sub-models."""
    if not isinstance(data, dict):
        return
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    for key, value in data.items():
        info = fields.get(key)
        if info is None:
            continue
        seen.add((model.__name__, key))
        for sub in _models(info.annotation):
            values = value.values() if get_origin(info.annotation) is dict else [value]
            for v in value if isinstance(value, list) else values:
                _used(sub, v, seen)


def _coverage() -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    for path in VALID:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path)).data
        _used(PipelineSpec, data, seen)
        for body in data.get("policies", {}).values():
            _used(PipelineSpec.model_fields["policies"].annotation.__args__[1], body, seen)  # type: ignore[union-attr]
        for name, body in data.get("adapters", {}).items():
            kind = REGISTRY.adapter(body["kind"])
            _used(kind.config, body, seen)
            seen.add((f"adapter {kind.name}", name))
        for stage in data["stages"]:
            # A `use:` naming a callable beside the spec imports it: as a load would, make
            # the spec's directory importable (not relying on an earlier test having done so).
            with importable(path.parent):
                kind = REGISTRY.stage(stage["use"])
            for key in stage.get("with", {}):
                seen.add((f"stage {kind.name}", key))
    return seen


def _all_fields(model: type[BaseModel], out: set[tuple[str, str]]) -> None:
    for name, info in model.model_fields.items():
        key = (model.__name__, info.alias or name)
        if key in out:
            continue
        out.add(key)
        for sub in _models(info.annotation):
            _all_fields(sub, out)


def test_the_valid_corpus_uses_every_field_of_the_document() -> None:
    expected: set[tuple[str, str]] = set()
    _all_fields(PipelineSpec, expected)
    assert expected - _coverage() == set()


@pytest.mark.parametrize("kind", sorted(REGISTRY.adapters))
def test_the_valid_corpus_sets_every_field_of_each_adapter_kind(kind: str) -> None:
    config = REGISTRY.adapters[kind].config
    expected = {(config.__name__, f.alias or n) for n, f in config.model_fields.items()}
    assert expected - _coverage() == set()


@pytest.mark.parametrize("kind", sorted(REGISTRY.stages))
def test_the_valid_corpus_sets_every_field_of_each_stage_kind(kind: str) -> None:
    config = REGISTRY.stages[kind].config
    expected = {(f"stage {kind}", f.alias or n) for n, f in config.model_fields.items()}
    assert expected - _coverage() == set()
