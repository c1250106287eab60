"""The JSON Schema of a pipeline test file, for editors (completion, hover, checks) and CI.

Built from the same Pydantic models the test loader validates with; an
adapter override is checked against the spec schema's own adapter kinds
(one branch per ``kind:``, ``scripted`` included). `schemas/funcpipe-test.schema.json`
is this schema for the built-in kinds; a test fails when it is stale.
"""

from __future__ import annotations

import json
from typing import Any

from funcpipe.pipetest.models import TestFile
from funcpipe.registry import REGISTRY, Registry
from funcpipe.spec.schema import build_schema

SCHEMA_ID = "https://funcpipe.dev/schemas/funcpipe-test.schema.json"
"""The ``$id`` of the schema."""

_DEFS = "#/$defs/"

EXAMPLE: dict[str, Any] = {
    "spec": "rag.yaml",
    "adapters": {"embedder": {"kind": "hashing", "dim": 64}},
    "tests": [
        {
            "name": "a rate-limited embedder is retried",
            "inputs": {"load": {"files": {"README.md": "# Title\n\nSome text."}}},
            "adapters": {
                "embedder": {"kind": "scripted", "dim": 64, "script": [{"status": 429, "retry_after": "30s"}]}
            },
            "expect": {
                "stages": {"chunk": {"count": 1}},
                "dead_letters": [],
                "policy": {"embed": {"attempts": 2, "waits": ["10s"]}},
                "report": {"status": "ok", "accounting": {"done": 1}},
            },
        }
    ],
}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][len(_DEFS) :]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _adapter_defs(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The spec schema's adapter override (one branch per kind) and the definitions it needs."""
    override = spec["properties"]["adapters"]["additionalProperties"]
    defs: dict[str, Any] = spec["$defs"]
    wanted: set[str] = set()
    todo = _refs(override)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= _refs(defs[name])
    return override, {name: defs[name] for name in sorted(wanted)}


def build_pipeline_test_schema(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a test file whose adapter kinds are those of ``registry``."""
    spec = build_schema(registry)
    base = TestFile.model_json_schema(by_alias=True, ref_template=_DEFS + "{model}")
    defs: dict[str, Any] = base.pop("$defs")
    override, adapter_defs = _adapter_defs(spec)
    for owner in (base, defs["PipelineTest"]):
        owner["properties"]["adapters"]["additionalProperties"] = override
    clash = set(adapter_defs) & set(defs)
    if clash:
        raise ValueError(f"schema definitions {sorted(clash)} of the spec clash with the test file's")
    defs.update(adapter_defs)
    return {
        "$schema": spec["$schema"],
        "$id": SCHEMA_ID,
        "title": "funcpipe pipeline tests",
        "description": "Tests of a funcpipe spec, run with `funcpipe test` on virtual time.",
        **{k: v for k, v in base.items() if k not in ("title", "description")},
        "examples": [EXAMPLE],
        "$defs": dict(sorted(defs.items())),
    }


def pipeline_test_schema_json(registry: Registry = REGISTRY) -> str:
    """`build_pipeline_test_schema` as stable, indented JSON text ending in a newline."""
    return json.dumps(build_pipeline_test_schema(registry), indent=2, ensure_ascii=False) + "\n"


__all__ = ["EXAMPLE", "SCHEMA_ID", "build_pipeline_test_schema", "pipeline_test_schema_json"]
