"""The JSON Schema of a test file (funcpipe/pipetest/schema.py) and its committed copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from funcpipe.pipetest.schema import EXAMPLE, build_pipeline_test_schema, pipeline_test_schema_json
from funcpipe.spec.documents import parse_yaml

REPO = Path(__file__).parents[2]
COMMITTED = REPO / "schemas" / "funcpipe-test.schema.json"
VALIDATOR = jsonschema.Draft202012Validator(build_pipeline_test_schema())
SHIPPED = sorted([*REPO.glob("pipelines/**/*.test.yaml"), *REPO.glob("examples/**/*.test.yaml")])


def _errors(document: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(document)]


def test_the_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == pipeline_test_schema_json(), (
        "schemas/funcpipe-test.schema.json is stale: "
        "run `funcpipe schema --test-file -o schemas/funcpipe-test.schema.json`"
    )


def test_the_schema_is_valid_against_its_metaschema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(COMMITTED.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_test_file_validates_and_names_the_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    depth = len(path.relative_to(REPO).parts) - 1
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={'../' * depth}schemas/funcpipe-test.schema.json"
    assert _errors(parse_yaml(text, str(path)).data) == []


def test_the_example_is_valid() -> None:
    assert _errors(EXAMPLE) == []


def test_an_adapter_override_is_checked_against_its_kind() -> None:
    doc = {"spec": "s.yaml", "tests": [{"name": "a", "adapters": {"e": {"kind": "scripted", "script": ["slow"]}}}]}
    assert _errors(doc)
    doc["tests"][0]["adapters"]["e"] = {"kind": "scripted", "script": ["ok", 429, {"status": 503, "times": 2}]}
    assert _errors(doc) == []


def test_unknown_keys_are_refused() -> None:
    assert _errors({"spec": "s.yaml", "tests": [{"name": "a", "expct": {}}]})
