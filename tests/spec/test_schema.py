"""The JSON Schema (funcpipe/spec/schema.py) and its committed copy."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from funcpipe.spec._yaml import parse_yaml
from funcpipe.spec.schema import EXAMPLE, build_schema, schema_json
from tests.spec._support import VALID, load

COMMITTED = Path(__file__).parents[2] / "schemas" / "funcpipe.schema.json"
SCHEMA = build_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def _errors(document: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(document)]


def test_the_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_json(), (
        "schemas/funcpipe.schema.json is stale: run `funcpipe schema -o schemas/funcpipe.schema.json`"
    )


def test_the_schema_is_valid_against_its_metaschema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(COMMITTED.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_every_valid_spec_validates_against_the_schema(path: Path) -> None:
    assert _errors(parse_yaml(path.read_text(encoding="utf-8"), str(path)).data) == []


def test_the_example_is_valid_for_the_schema_and_the_loader() -> None:
    assert _errors(EXAMPLE) == []
    assert load(json.dumps(EXAMPLE)).spec.name == "rag"


def _example(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return doc


def test_an_adapter_is_checked_against_its_kind() -> None:
    assert _errors(_example(adapters__embedder={"kind": "hashing", "model": "x"}))


def test_an_adapter_of_an_unknown_kind_is_rejected() -> None:
    assert _errors(_example(adapters__embedder={"kind": "hashng"}))


def test_a_stage_with_block_is_checked_against_its_use() -> None:
    assert _errors(_example(stages__1__with={"size": 800, "glob": "*.md"}))


def test_a_stage_kind_that_needs_an_adapter_requires_one() -> None:
    assert _errors(_example(stages__2={"id": "embed", "use": "embed"}))


def test_a_user_callable_stage_takes_no_with_block() -> None:
    stage = {"id": "u", "use": "pkg.mod:fn", "with": {"x": 1}}
    assert _errors(_example(stages__3=stage))


@pytest.mark.parametrize("value", ["250ms", "2s", 1.5, "${TIMEOUT:-2s}"])
def test_durations_accept_every_written_form(value: object) -> None:
    assert _errors(_example(shutdown_timeout=value)) == []


def test_a_timeout_may_be_a_bare_duration() -> None:
    assert _errors(_example(policies__embed_api={"timeout": "10s"})) == []


def test_a_number_field_accepts_a_template() -> None:
    assert _errors(_example(stages__1__with={"size": "{{ params.size }}"})) == []


def test_a_number_field_rejects_other_strings() -> None:
    assert _errors(_example(stages__1__with={"size": "big"}))


def test_adapters_are_a_union_discriminated_on_kind() -> None:
    branches = SCHEMA["properties"]["adapters"]["additionalProperties"]
    assert branches["discriminator"]["propertyName"] == "kind"
    assert len(branches["oneOf"]) == len(branches["discriminator"]["mapping"])


def test_every_field_has_a_description() -> None:
    missing: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "description" not in prop and name != "kind":
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                # if/then rules restate fields already described; examples are data.
                if key not in ("allOf", "examples"):
                    visit(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}/{i}")

    visit(SCHEMA, "#")
    assert missing == []


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
"""Keywords whose value maps names (chosen by the spec, not JSON Schema) to schemas."""

_PYDANTIC_BOUNDS = {"ge", "le", "gt", "lt", "multiple_of"}


def _schema_keywords(node: Any, where: str = "#") -> list[tuple[str, str]]:
    """Every (location, keyword) of every schema under ``node``; names inside name maps are skipped."""
    found: list[tuple[str, str]] = []
    if isinstance(node, list):
        for i, value in enumerate(node):
            found += _schema_keywords(value, f"{where}/{i}")
    elif isinstance(node, dict):
        for key, value in node.items():
            found.append((where, key))
            if key in ("examples", "default", "const", "enum"):
                continue  # data, not schemas
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                for name, sub in value.items():
                    found += _schema_keywords(sub, f"{where}/{key}/{name}")
            else:
                found += _schema_keywords(value, f"{where}/{key}")
    return found


def test_no_bound_is_written_under_a_pydantic_constraint_name() -> None:
    # JSON Schema does not know `ge`/`le`: an editor would silently accept any value.
    assert [(at, key) for at, key in _schema_keywords(SCHEMA) if key in _PYDANTIC_BOUNDS] == []


def test_optional_and_validated_numbers_keep_their_bounds() -> None:
    # `dimensions: Int | None`, `concurrency: Int | None` and the `Float` weights are
    # numbers behind a validator: the shapes whose bounds were lost.
    assert _errors(_example(adapters__embedder={"kind": "openai", "model": "m", "dimensions": 0}))
    assert _errors(_example(adapters__embedder={"kind": "openai", "model": "m", "dimensions": 65_537}))
    assert _errors(_example(adapters__embedder={"kind": "openai", "model": "m", "dimensions": 256})) == []
    assert _errors(_example(policies__embed_api__concurrency=0))
    assert _errors(_example(policies__embed_api__concurrency=None)) == []
    assert _errors(_example(policies__embed_api={"fairness": {"key": "meta.t", "weights": {"a": 0}}}))
    assert _errors(_example(policies__embed_api={"fairness": {"key": "meta.t", "weights": {"a": 0.5}}})) == []


def test_the_keyword_walk_sees_bounds_wherever_they_are() -> None:
    # The walk the test above relies on finds a stray bound in a nested branch, and
    # does not mistake a field named `ge` for one.
    doc = {"$defs": {"M": {"properties": {"ge": {"anyOf": [{"type": "integer", "le": 3}]}}}}}
    assert [key for _, key in _schema_keywords(doc) if key in _PYDANTIC_BOUNDS] == ["le"]


REPO = Path(__file__).parents[2]
PUBLISHED = sorted(
    p
    for p in [*REPO.glob("pipelines/**/*.y*ml"), *REPO.glob("examples/**/*.y*ml")]
    if not p.name.endswith((".test.yaml", ".test.yml"))  # test files have their own schema (tests/pipetest)
)
_MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S+)$")


def test_there_are_published_specs() -> None:
    assert PUBLISHED


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: str(p.relative_to(REPO)))
def test_published_spec_points_editors_at_the_committed_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = _MODELINE.match(first)
    assert m is not None, f"{path} must begin with '# yaml-language-server: $schema=...'"
    assert (path.parent / m["path"]).resolve() == COMMITTED.resolve()


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: str(p.relative_to(REPO)))
def test_published_spec_validates_against_the_schema(path: Path) -> None:
    assert _errors(parse_yaml(path.read_text(encoding="utf-8"), str(path)).data) == []
