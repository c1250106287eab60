"""The JSON Schema of a spec, for editors (completion, hover, checks) and CI.

It is built from the same Pydantic models the loader validates with, then
sharpened where a plain model schema is too loose for an editor:

- each adapter is a union discriminated on ``kind:``, one branch per kind;
- a stage's ``with:`` is conditioned on its ``use:`` (``if``/``then``), and
  kinds that need an adapter require one;
- durations accept ``250ms``, ``2s``, ``1m``, ``1h`` or a number of seconds,
  and ``timeout:`` also a bare duration;
- wherever the loader accepts a ``${VAR}`` or ``{{ params.x }}`` string that
  becomes a number, boolean or constrained value once rendered, so does the
  schema;
- numeric bounds are JSON Schema's keywords (``minimum``, ``exclusiveMaximum``...)
  everywhere, including on optional and validated numbers, where Pydantic
  writes its own constraint names (see `SpecJsonSchema`).

`schemas/funcpipe.schema.json` is this schema for the built-in kinds; a test
fails when it is stale.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema

from funcpipe.policy.models import format_duration
from funcpipe.registry import PORT_NAMES, REGISTRY, Registry
from funcpipe.spec.models import PipelineSpec

SCHEMA_ID = "https://funcpipe.dev/schemas/funcpipe.schema.json"
"""The ``$id`` of the schema."""

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h)$"
_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_TEMPLATED = r"\$\{|\{\{|\{%"
_ANNOTATIONS = ("title", "description", "default", "examples")
_DEFS = "#/$defs/"

EXAMPLE: dict[str, Any] = {
    "version": 1,
    "name": "rag",
    "params": {"corpus": "docs"},
    "adapters": {
        "embedder": {"kind": "hashing", "dim": 384},
        "store": {"kind": "pgvector", "table": "chunks"},
        "llm": {"kind": "extractive"},
    },
    "policies": {
        "embed_api": {
            "retry": {"max_attempts": 5},
            "rate_limit": {"requests": 50, "per": "1s"},
            "concurrency": 8,
        }
    },
    "stages": [
        {
            "id": "load",
            "use": "source.files",
            "with": {"path": "{{ params.corpus }}", "glob": "**/*.md"},
        },
        {"id": "chunk", "use": "text.chunk", "with": {"size": 800, "overlap": 100}},
        {
            "id": "embed",
            "use": "embed",
            "adapter": "embedder",
            "policy": "embed_api",
            "batch": {"size": 64, "max_wait": "200ms"},
        },
        {"id": "store", "use": "vector.upsert", "adapter": "store", "batch": {"size": 256}},
    ],
    "query": {"top_k": 5, "adapter": "llm"},
    "on_error": {"mode": "continue"},
}
"""A complete, valid spec: the schema's example (and a test fixture)."""


_NUMERIC_KEYWORDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
    "multiple_of": "multipleOf",
}
"""Pydantic's constraint names and the JSON Schema keywords that mean the same."""


class SpecJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema generator, with numeric bounds as JSON Schema keywords.

    Pydantic writes a bound it cannot set on the number's own schema (a
    number behind a validator, which is how ``Int`` and ``Float`` refuse
    booleans, as in ``dimensions: Int | None``) under its constraint name,
    ``ge``/``le``/``gt``/``lt``, which no JSON Schema validator or editor
    knows, so the bound is silently lost. This generator renames them.
    """

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        """The schema of ``schema``, with every numeric bound under its JSON Schema keyword."""
        renamed: JsonSchemaValue = _walk(super().generate(schema, mode), _numeric_keywords)
        return renamed


def _numeric_keywords(node: dict[str, Any]) -> dict[str, Any]:
    # Only a number's own schema: a `properties` mapping may have a field named `ge`.
    if node.get("type") not in ("integer", "number"):
        return node
    return {_NUMERIC_KEYWORDS.get(k, k): v for k, v in node.items()}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of one config model, as the spec's schema embeds it.

    Definitions are referenced as ``#/$defs/<model>``, and numeric bounds are
    JSON Schema keywords (`SpecJsonSchema`).
    """
    return model.model_json_schema(by_alias=True, ref_template=_DEFS + "{model}", schema_generator=SpecJsonSchema)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _DEFS + name}


def _walk(node: Any, fn: Any) -> Any:
    """Rebuild ``node`` bottom-up, passing every mapping through ``fn``."""
    if isinstance(node, dict):
        return fn({k: _walk(v, fn) for k, v in node.items()})
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    return node


def _split(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    notes = {k: node[k] for k in _ANNOTATIONS if k in node}
    rest = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
    return notes, rest


def _durations(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("type") == "string" and node.get("pattern") == _DURATION_PATTERN:
        notes, _ = _split(node)
        if isinstance(notes.get("default"), int | float):
            notes["default"] = format_duration(float(notes["default"]))
        return {"$ref": _DEFS + "Duration", **notes}
    return node


def _is_leaf(node: dict[str, Any]) -> bool:
    if "$ref" in node or "anyOf" in node or "oneOf" in node or "allOf" in node:
        return False
    kind = node.get("type")
    if kind in ("integer", "number", "boolean"):
        return True
    return kind == "string" and any(k in node for k in ("enum", "const", "pattern"))


def _templatable(node: dict[str, Any]) -> dict[str, Any]:
    # Leaves whose value becomes valid only once ${VAR} or {{ }} is rendered.
    props = node.get("properties")
    if isinstance(props, dict):
        node = {**node, "properties": {k: _wrap(k, v) for k, v in props.items()}}
    for key in ("items", "additionalProperties"):
        sub = node.get(key)
        if isinstance(sub, dict) and _is_leaf(sub):
            node = {**node, key: _wrap("", sub)}
    for key in ("anyOf", "oneOf"):
        subs = node.get(key)
        if isinstance(subs, list):
            node = {**node, key: [_wrap("", s) if isinstance(s, dict) else s for s in subs]}
    return node


def _wrap(name: str, node: Any) -> Any:
    if name in ("version", "kind") or not isinstance(node, dict) or not _is_leaf(node):
        return node
    notes, rest = _split(node)
    return {"anyOf": [rest, _ref("Templated")], **notes}


def _common_defs() -> dict[str, Any]:
    return {
        "Duration": {
            "description": "A duration: 250ms, 2s, 1.5m or 1h (or a number of seconds).",
            "anyOf": [
                {"type": "string", "pattern": _DURATION_PATTERN},
                {"type": "number", "minimum": 0},
                _ref("Templated"),
            ],
            "examples": ["250ms", "2s", "1m", "1h"],
        },
        "Templated": {
            "description": "A string rendered at load time into the expected value: "
            "${VAR}, ${VAR:-default} or {{ params.x }}.",
            "type": "string",
            "pattern": _TEMPLATED,
            "examples": ["${TOP_K:-5}", "{{ params.size }}"],
        },
    }


def _merge_defs(defs: dict[str, Any], extra: dict[str, Any], owner: str) -> None:
    for name, body in extra.items():
        if name in defs and defs[name] != body:
            raise ValueError(f"schema definition {name!r} of {owner} clashes with another one")
        defs[name] = body


def _adapters(registry: Registry, defs: dict[str, Any]) -> dict[str, Any]:
    branches: list[dict[str, Any]] = []
    mapping: dict[str, str] = {}
    for name, kind in sorted(registry.adapters.items()):
        schema = model_schema(kind.config)
        _merge_defs(defs, schema.pop("$defs", {}), f"adapter kind {name!r}")
        schema["required"] = ["kind", *[r for r in schema.get("required", []) if r != "kind"]]
        provides = ", ".join(PORT_NAMES.get(p, p.__name__) for p in kind.provides)
        schema["description"] = f"{kind.description or schema.get('description', '')} "
        schema["description"] += f"Provides: {provides}."
        key = f"adapter.{name}"
        defs[key] = schema
        branches.append(_ref(key))
        mapping[name] = _DEFS + key
    return {
        "type": "object",
        "description": "Named adapters. Each has a `kind:` (which selects its fields) "
        "and that kind's settings; stages and the query name them.",
        "additionalProperties": {
            "oneOf": branches,
            "discriminator": {"propertyName": "kind", "mapping": mapping},
        },
        "examples": [EXAMPLE["adapters"]],
    }


def _stage(registry: Registry, defs: dict[str, Any]) -> None:
    stage = defs["StageSpec"]
    props = stage["properties"]
    kinds = sorted(registry.stages.items())
    props["use"] = {
        "description": props["use"]["description"],
        "oneOf": [
            *({"const": name, "description": kind.description} for name, kind in kinds),
            {
                "type": "string",
                "pattern": _IMPORT_PATH,
                "description": "A Python callable applied to each item, as package.module:name.",
            },
        ],
        "examples": ["text.chunk", "mypkg.stages:normalise"],
    }
    frm = props["from"]
    props["from"] = {
        "description": frm["description"],
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            {"type": "null"},
        ],
        "default": None,
        "examples": ["chunk", ["left", "right"]],
    }
    rules: list[dict[str, Any]] = []
    for name, kind in kinds:
        schema = model_schema(kind.config)
        _merge_defs(defs, schema.pop("$defs", {}), f"stage kind {name!r}")
        key = f"stage.{name}"
        defs[key] = schema
        then: dict[str, Any] = {"properties": {"with": _ref(key)}}
        required = [*(["with"] if schema.get("required") else []), *(["adapter"] if kind.needs else [])]
        if required:
            then["required"] = required
        rules.append({"if": {"properties": {"use": {"const": name}}, "required": ["use"]}, "then": then})
    rules.append(
        {
            "if": {"properties": {"use": {"pattern": _IMPORT_PATH}}, "required": ["use"]},
            "then": {"properties": {"with": {"type": "object", "maxProperties": 0}}},
        }
    )
    stage["allOf"] = rules


def build_schema(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec whose kinds are those of ``registry``."""
    base = model_schema(PipelineSpec)
    defs: dict[str, Any] = base.pop("$defs")
    base["properties"]["adapters"] = _adapters(registry, defs)
    _stage(registry, defs)
    defs = {name: _walk(body, _durations) for name, body in defs.items()}
    base = _walk(base, _durations)
    timeout = defs["Timeout"]
    notes, body = _split(timeout)
    defs["Timeout"] = {**notes, "anyOf": [_ref("Duration"), body]}
    defs = {name: _walk(body, _templatable) for name, body in defs.items()}
    base = _walk(base, _templatable)
    defs.update(_common_defs())
    return {
        "$schema": _DRAFT,
        "$id": SCHEMA_ID,
        "title": "funcpipe spec",
        "description": "A funcpipe pipeline: stages, adapters and policies as data. Validate with `funcpipe validate`.",
        **{k: v for k, v in base.items() if k not in ("title", "description")},
        "examples": [EXAMPLE],
        "$defs": dict(sorted(defs.items())),
    }


def schema_json(registry: Registry = REGISTRY) -> str:
    """`build_schema` as stable, indented JSON text ending in a newline."""
    return json.dumps(build_schema(registry), indent=2, ensure_ascii=False) + "\n"


__all__ = ["EXAMPLE", "SCHEMA_ID", "SpecJsonSchema", "build_schema", "model_schema", "schema_json"]
