"""The Markdown reference of every stage and adapter kind, generated from the registry.

Each kind gets its description, what it needs or provides, and a table of its
fields: name, type, default, bounds and description. Types and bounds are read
from the same JSON Schema the editors get (`funcpipe.spec.schema`), defaults
from the config models, so the reference cannot drift from what is validated.

`docs/reference.md` is this reference for the built-in kinds
(``funcpipe schema --reference -o docs/reference.md``); a test fails when it
is stale.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from funcpipe.policy.models import format_duration
from funcpipe.registry import PORT_NAMES, REGISTRY, AdapterKind, Registry, StageKind
from funcpipe.spec.schema import model_schema

_DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h)$"
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"})
_ROLES = {
    "source": "source: reads items, takes no input",
    "transform": "transform: reads its input, emits items",
    "sink": "sink: writes its input and passes it on",
}
_HEADER = """\
# Reference: stage and adapter kinds

<!-- Generated from the registry by `funcpipe schema --reference -o docs/reference.md`. Do not edit:
     a test fails when this file is stale. -->

Every stage kind (a stage's `use:`) and adapter kind (an adapter's `kind:`),
with every field: its type, its default, the bounds `funcpipe validate`
checks, and what it does. Durations are written `250ms`, `2s`, `1m` or `1h`;
any field also accepts a `${VAR}` or `{{ params.x }}` string that renders to
a valid value. The fields common to every stage (`id`, `use`, `from`,
`adapter`, `policy`, `batch`) are described in [the spec reference](spec.md),
policies in [policies](policies.md), and kinds from plugins in
[plugins](plugins.md).
"""


def _cell(text: str) -> str:
    # A table cell is one line, and `|` would end it (even inside a code span).
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: str) -> str:
    return f"``{value}``" if "`" in value else f"`{value}`"


def _yaml_scalar(value: Any) -> str:
    # Defaults as a spec would write them: JSON flow style, which YAML reads too,
    # without quotes on a string YAML reads back as the same string.
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)


def _branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("anyOf", "oneOf"):
        subs = node.get(key)
        if isinstance(subs, list):
            return [s for sub in subs if isinstance(sub, dict) for s in _branches(sub)]
    return [node]


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    branches = _branches(node)
    if len(branches) > 1:
        names = [_type(b, defs) for b in branches if b.get("type") != "null"]
        nullable = any(b.get("type") == "null" for b in branches)
        return " or ".join(dict.fromkeys([*names, *(["null"] if nullable else [])]))
    ref = node.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if "const" in node:
        return _code(_yaml_scalar(node["const"]).strip('"'))
    if "enum" in node:
        return " or ".join(_code(str(v)) for v in node["enum"])
    kind = node.get("type")
    if kind == "string" and node.get("pattern") == _DURATION_PATTERN:
        return "duration"
    if kind == "array":
        prefix = node.get("prefixItems")
        if isinstance(prefix, list):
            return "[" + ", ".join(_type(p, defs) for p in prefix) + "]"
        items = node.get("items")
        return f"list of {_type(items, defs)}" if isinstance(items, dict) else "list"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return f"mapping of string to {_type(values, defs)}"
        return "mapping"
    return str(kind) if kind else "any"


def _count(n: object, what: str) -> str:
    return f"{n} {what[:-1] if n == 1 else what}"


def _bounds(node: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for branch in _branches(node):
        lo = branch.get("minimum")
        hi = branch.get("maximum")
        if branch.get("exclusiveMinimum") is not None:
            out.append(f"> {branch['exclusiveMinimum']}")
        if branch.get("exclusiveMaximum") is not None:
            out.append(f"< {branch['exclusiveMaximum']}")
        if lo is not None and hi is not None:
            out.append(f"{lo} to {hi}")
        elif lo is not None:
            out.append(f"≥ {lo}")
        elif hi is not None:
            out.append(f"≤ {hi}")
        for what, low, high in (
            ("characters", "minLength", "maxLength"),
            ("items", "minItems", "maxItems"),
            ("keys", "minProperties", "maxProperties"),
        ):
            a, b = branch.get(low), branch.get(high)
            if a is not None and a == b:
                out.append(f"exactly {_count(a, what)}")
            elif a is not None and b is not None:
                out.append(f"{a} to {_count(b, what)}")
            elif a is not None:
                out.append(f"at least {_count(a, what)}")
            elif b is not None:
                out.append(f"at most {_count(b, what)}")
        pattern = branch.get("pattern")
        if isinstance(pattern, str) and pattern != _DURATION_PATTERN:
            out.append(f"matches {_code(pattern)}")
        items = branch.get("items")
        if isinstance(items, dict):
            out.extend(f"each: {b}" for b in _bounds(items))
        values = branch.get("additionalProperties")
        if isinstance(values, dict):
            out.extend(f"each value: {b}" for b in _bounds(values))
    return list(dict.fromkeys(out))


def _default(model: type[BaseModel], name: str, node: dict[str, Any]) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if node.get("type") == "string" and node.get("pattern") == _DURATION_PATTERN and isinstance(value, int | float):
        return _code(format_duration(float(value)))
    if value is None:
        return "none"
    return _code(_yaml_scalar(to_jsonable_python(value)))


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    schema = model_schema(model)
    defs: dict[str, Any] = schema.get("$defs", {})
    props: dict[str, Any] = schema.get("properties", {})
    ignored: frozenset[str] = getattr(model, "resume_ignores", frozenset())
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in skip:
            continue
        node = props.get(key, {})
        description = _rst(field.description or "")
        if name in ignored:
            description += " Not part of the resume key: editing it redoes nothing."
        if node.get("writeOnly"):
            description += " Treated as a secret: errors never repeat it."
        cells = (
            _code(key),
            _type(node, defs),
            _default(model, name, node),
            "; ".join(_bounds(node)),
            description,
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not rows:
        return ["No fields."]
    return ["| field | type | default | bounds | description |", "| --- | --- | --- | --- | --- |", *rows]


def _rst(text: str) -> str:
    return text.replace("``", "`")


def _doc(model: type[BaseModel]) -> str:
    # The first paragraph of the docstring, reST literals as Markdown ones.
    first = (model.__doc__ or "").strip().split("\n\n")[0]
    return _rst(" ".join(first.split()))


def _anchor(prefix: str, name: str) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
    text = f"{prefix} {name}".lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def _stage(kind: StageKind) -> list[str]:
    adapter = f"required, providing {PORT_NAMES.get(kind.needs, kind.needs.__name__)}" if kind.needs else "none"
    lines = [f"### stage `{kind.name}`", ""]
    if kind.description:
        lines += [_rst(kind.description), ""]
    doc = _doc(kind.config)
    if doc and doc != _rst(kind.description):
        lines += [doc, ""]
    lines += [
        f"- role: {_ROLES.get(kind.role, kind.role)}",
        f"- `adapter:` {adapter}",
        f"- calls an external service: {'yes' if kind.external else 'no'}",
        "",
        "`with:` fields:",
        "",
        *_fields(kind.config),
        "",
    ]
    return lines


def _adapter(kind: AdapterKind) -> list[str]:
    provides = ", ".join(PORT_NAMES.get(p, p.__name__) for p in kind.provides)
    lines = [f"### adapter `{kind.name}`", ""]
    doc = _doc(kind.config)
    summary = _rst(kind.description)
    lines += [summary or doc, ""]
    if doc and summary and not doc.startswith(summary):
        lines += [doc, ""]
    lines += [f"Provides: {provides}.", "", *_fields(kind.config, skip=("kind",)), ""]
    return lines


def reference_markdown(registry: Registry = REGISTRY) -> str:
    """The reference of ``registry``'s stage and adapter kinds, as Markdown ending in a newline."""
    stages = sorted(registry.stages.values(), key=lambda k: k.name)
    adapters = sorted(registry.adapters.values(), key=lambda k: k.name)
    out = [_HEADER, "## Stage kinds", "", "| `use:` | role | `adapter:` providing | description |"]
    out.append("| --- | --- | --- | --- |")
    for s in stages:
        needs = PORT_NAMES.get(s.needs, s.needs.__name__) if s.needs else ""
        link = f"[`{s.name}`](#{_anchor('stage', s.name)})"
        out.append(f"| {link} | {s.role} | {needs} | {_cell(_rst(s.description))} |")
    out.append("")
    for s in stages:
        out += _stage(s)
    out += ["## Adapter kinds", "", "| `kind:` | provides | description |", "| --- | --- | --- |"]
    for a in adapters:
        provides = ", ".join(PORT_NAMES.get(p, p.__name__) for p in a.provides)
        link = f"[`{a.name}`](#{_anchor('adapter', a.name)})"
        out.append(f"| {link} | {provides} | {_cell(_rst(a.description) or _doc(a.config))} |")
    out.append("")
    for a in adapters:
        out += _adapter(a)
    return "\n".join(out).rstrip("\n") + "\n"


__all__ = ["reference_markdown"]
