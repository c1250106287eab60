"""Comparing what a run produced with what a test expects: subset matches, field conditions, diffs."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from funcpipe.pipetest.models import Condition

_MISSING = object()


def plain(value: object) -> Any:
    """``value`` as plain JSON data (tuples become lists, unknown objects their text)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def same(expected: object, actual: object) -> bool:
    """Equality of plain data where ``1 == 1.0`` but ``true`` is not ``1``, and floats compare to 1e-9."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return expected.keys() == actual.keys() and all(same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


def subset(pattern: object, actual: object) -> bool:
    """True if ``actual`` matches ``pattern``: mappings by a subset of their keys (recursively), the rest by `same`."""
    if isinstance(pattern, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and subset(v, actual[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return (
            isinstance(actual, list)
            and len(pattern) == len(actual)
            and all(subset(p, a) for p, a in zip(pattern, actual, strict=True))
        )
    return same(pattern, actual)


def field_of(obj: object, path: str) -> object:
    """The value at the dotted ``path`` (``meta.path``, ``data.0``), or `MISSING`."""
    cur: object = obj
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def is_missing(value: object) -> bool:
    """True for the value `field_of` gives for a field that is not there."""
    return value is _MISSING


def _length(value: object) -> int | None:
    return len(value) if isinstance(value, str | list | Mapping) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _contains(container: object, wanted: object) -> bool:
    if isinstance(container, str):
        return isinstance(wanted, str) and wanted in container
    if isinstance(container, list):
        return any(same(wanted, x) for x in container)
    if isinstance(container, Mapping):
        return isinstance(wanted, str) and wanted in container
    return False


def _holds(name: str, want: Any, value: object) -> bool:
    """Whether the condition ``name: want`` holds for a present ``value``."""
    length, number = _length(value), _number(value)
    if name == "equals":
        return same(want, value)
    if name == "not_equals":
        return not same(want, value)
    if name == "contains":
        return _contains(value, want)
    if name == "matches":
        return isinstance(value, str) and re.search(str(want), value) is not None
    if name == "one_of":
        return any(same(w, value) for w in want)
    if name in ("min_length", "max_length"):
        return length is not None and (length >= want if name == "min_length" else length <= want)
    if number is None:
        return False
    return bool({"gt": number > want, "gte": number >= want, "lt": number < want, "lte": number <= want}[name])


def unmet(condition: Condition, value: object) -> list[str]:
    """What of ``condition`` the field's ``value`` does not satisfy (empty if it all holds)."""
    out: list[str] = []
    missing = is_missing(value)
    for name in sorted(condition.model_fields_set):
        want = getattr(condition, name)
        if name == "exists":
            if want is missing:  # exists: true and missing, or exists: false and present
                out.append("is missing" if missing else "is present")
            continue
        if missing:
            out.append("is missing")
            break
        if not _holds(name, want, value):
            length = _length(value)
            shown = f"length {length}" if name.endswith("_length") and length is not None else short(value)
            out.append(f"{name} {short(want)} does not hold for {shown}")
    return out


def short(value: object, limit: int = 80) -> str:
    """A one-line rendering of ``value`` for messages."""
    text = json.dumps(value, ensure_ascii=False, default=str) if not is_missing(value) else "(missing)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_yaml(value: object) -> str:
    """``value`` as block YAML, as a test file would hold it."""
    return yaml.safe_dump(plain(value), allow_unicode=True, sort_keys=False, width=100, default_flow_style=False)


def diff(expected: object, actual: object) -> str:
    """A unified diff of ``expected`` and ``actual`` as YAML (``-`` expected, ``+`` actual)."""
    lines = difflib.unified_diff(
        as_yaml(expected).splitlines(), as_yaml(actual).splitlines(), "expected", "actual", lineterm="", n=3
    )
    return "\n".join(lines)


def aligned(expected: Sequence[object], actual: Sequence[object]) -> list[object]:
    """``actual`` reordered to follow ``expected`` where they share elements, the rest after, in order.

    Used to diff two lists compared in any order: only real differences show.
    """
    rest = list(actual)
    front: list[object] = []
    for e in expected:
        for i, a in enumerate(rest):
            if same(e, a):
                front.append(rest.pop(i))
                break
    return front + rest


def same_multiset(expected: Sequence[object], actual: Sequence[object]) -> bool:
    """True if the two lists hold the same elements, in any order."""
    return len(expected) == len(actual) and all(
        same(e, a) for e, a in zip(expected, aligned(expected, actual), strict=True)
    )


__all__ = [
    "aligned",
    "as_yaml",
    "diff",
    "field_of",
    "is_missing",
    "plain",
    "same",
    "same_multiset",
    "short",
    "subset",
    "unmet",
]
