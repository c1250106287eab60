"""Pydantic validation errors, mapped back to the YAML positions of their paths."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from funcpipe.errors import SpecError
from funcpipe.registry import did_you_mean
from funcpipe.spec._interpolate import is_env_field
from funcpipe.spec._paths import Path
from funcpipe.spec._yaml import Document

_GENERIC_HINT = "run `funcpipe schema` to see every field, its type and its default"
_QUOTED = re.compile(r"'([^']*)'")
_MAX_SHOWN = 60

_KIND_OF_TYPE = {
    "dict_type": "a mapping (key: value pairs)",
    "model_type": "a mapping (key: value pairs)",
    "model_attributes_type": "a mapping (key: value pairs)",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def show(value: object) -> str:
    """A short YAML-like rendering of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def value_at(data: Any, path: Path) -> Any:
    """The value at ``path`` in plain data (``None`` if there is none)."""
    cur = data
    for part in path:
        if isinstance(cur, dict) and isinstance(part, str):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            return None
    return cur


def _follow(data: Any, loc: Sequence[str | int]) -> Path:
    # Pydantic locations also name union members and model-level steps (for
    # example a bare duration validated as Timeout.attempt); keep only the
    # steps that exist in the data.
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and isinstance(part, str) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_dict or in_list:
            cur = cur[part]
            out.append(part)
    return tuple(out)


def _members(tp: Any) -> Iterator[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _members(get_args(tp)[0])
    elif origin is Union or origin is types.UnionType:
        for arg in get_args(tp):
            yield from _members(arg)
    else:
        yield tp


def _model_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _step(tp: Any, part: str | int) -> tuple[Any, FieldInfo | None] | None:
    for member in _members(tp):
        origin = get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            info = _model_fields(member).get(part)
            if info is not None:
                return info.annotation, info
        elif origin is dict and isinstance(part, str):
            return get_args(member)[1], None
        elif origin in (list, tuple) and isinstance(part, int):
            return get_args(member)[0], None
    return None


def field_at(model: type[BaseModel], path: Path) -> FieldInfo | None:
    """The model field that ``path`` (relative to ``model``) ends at, if any."""
    tp: Any = model
    info: FieldInfo | None = None
    for part in path:
        found = _step(tp, part)
        if found is None:
            return None
        tp, info = found
    return info


def fields_at(model: type[BaseModel], path: Path) -> list[str] | None:
    """The field names of the model that ``path`` (relative to ``model``) ends at."""
    tp: Any = model
    for part in path:
        found = _step(tp, part)
        if found is None:
            return None
        tp = found[0]
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return sorted(_model_fields(member))
    return None


def _hint_for(model: type[BaseModel], rel: Path) -> str:
    # A list item or mapping value has no description of its own: its field's says what it is.
    for end in range(len(rel), 0, -1):
        info = field_at(model, rel[:end])
        if info is not None and info.description:
            return f"{rel[end - 1]}: {info.description}"
    return _GENERIC_HINT


_BOUNDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _range_hint(model: type[BaseModel], rel: Path) -> str:
    """The hint for a number out of range: the field, then every bound it has."""
    hint = _hint_for(model, rel)
    info = field_at(model, rel)
    if info is None:
        return hint
    bounds = [
        f"{_BOUNDS[attr]} {getattr(m, attr)}"
        for m in info.metadata
        for attr in _BOUNDS
        if getattr(m, attr, None) is not None
    ]
    return f"{hint} Use a value {' and '.join(bounds)}." if bounds else hint


def pydantic_errors(doc: Document, exc: ValidationError, *, model: type[BaseModel], root: Path = ()) -> list[SpecError]:
    """Located `SpecError`s for every error of ``exc``.

    Args:
        doc: the document the validated data came from.
        exc: the validation error.
        model: the model that was validated.
        root: where in the document the validated data is.
    """
    data = value_at(doc.data, root)
    out: list[SpecError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        missing = kind == "missing" and bool(loc)
        rel = (*_follow(data, loc[:-1]), loc[-1]) if missing else _follow(data, loc)
        path = (*root, *rel)
        value = value_at(data, rel)
        # Pydantic counts the items left after validation; when an item
        # failed, that error is reported on its own.
        if kind == "too_short" and isinstance(value, list) and len(value) >= _min_length(err):
            continue
        message, hint, at_key = _describe(doc, err, model, rel, path, value)
        out.append(doc.error(path, message, hint=hint, at_key=at_key))
    return out


def _min_length(err: Any) -> int:
    ctx = err.get("ctx") or {}
    return int(ctx.get("min_length", 0))


def is_secret_field(model: type[BaseModel], rel: Path) -> bool:
    """True if the field at ``rel`` may hold a secret (marked ``writeOnly``, e.g. a DSN)."""
    info = field_at(model, rel)
    extra = info.json_schema_extra if info is not None else None
    return isinstance(extra, dict) and extra.get("writeOnly") is True


def _shown(doc: Document, path: Path, value: object, secret: bool = False) -> str:
    if is_env_field(path) or secret:
        return "(value not shown)"
    written = doc.written.get(path)
    if written is not None:
        return show(written)
    return show(value)


def _scrub(doc: Document, path: Path, value: object, message: str, secret: bool = False) -> str:
    # A value that came from the environment may be a secret: messages show
    # the text as written in the spec instead.
    if (is_env_field(path) or secret) and isinstance(value, str) and value:
        return message.replace(value, "(value not shown)")
    written = doc.written.get(path)
    if written is not None and isinstance(value, str) and value:
        return message.replace(value, written)
    return message


def _describe(
    doc: Document,
    err: Any,
    model: type[BaseModel],
    rel: Path,
    path: Path,
    value: object,
) -> tuple[str, str, bool]:
    kind: str = err["type"]
    secret = is_secret_field(model, rel)
    shown = _shown(doc, path, value, secret)
    if kind == "missing":
        name = rel[-1]
        return f"missing required field {name!r}", _hint_for(model, rel), False
    if kind == "extra_forbidden":
        name = str(rel[-1]) if rel else "?"
        allowed = fields_at(model, rel[:-1]) or []
        guess = did_you_mean(name, allowed)
        message = f"unknown field {name!r}" + (f" (did you mean {guess!r}?)" if guess else "")
        hint = f"allowed here: {', '.join(allowed)}" if allowed else _GENERIC_HINT
        return message, hint, True
    if path == ("version",):
        return (
            f"unsupported spec version {shown}; only version 1 exists",
            "write `version: 1`",
            False,
        )
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        message = f"{shown} is not allowed: expected {expected}"
        if isinstance(value, str) and not is_env_field(path):
            guess = did_you_mean(value, _QUOTED.findall(expected))
            if guess:
                message += f" (did you mean {guess!r}?)"
        return message, _hint_for(model, rel), False
    if kind == "too_short":
        least = _min_length(err)
        count = len(value) if isinstance(value, list) else 0
        return (
            f"should have at least {least} item{'s' if least != 1 else ''}, got {count}",
            _hint_for(model, rel),
            False,
        )
    if kind in _KIND_OF_TYPE:
        return f"should be {_KIND_OF_TYPE[kind]}, got {shown}", _hint_for(model, rel), False
    msg = str(err["msg"])
    if kind in ("value_error", "assertion_error"):
        msg = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
        msg = _scrub(doc, path, value, msg, secret)
        if secret:
            return msg, _hint_for(model, rel), False
        if not isinstance(value, dict | list) and shown not in msg and repr(value) not in msg:
            msg = f"{msg} (got {shown})"
        return msg, _hint_for(model, rel), False
    hint = _range_hint(model, rel) if kind in _RANGE_ERRORS else _hint_for(model, rel)
    fix = (err.get("ctx") or {}).get("hint")
    if isinstance(fix, str):
        # A validator that knows the fix gives it (in its error's context).
        hint = fix
    if msg.startswith("Input should be "):
        msg = "should be " + msg[len("Input should be ") :]
    elif msg.startswith("String should "):
        msg = "should " + msg[len("String should ") :]
    msg = _scrub(doc, path, value, msg, secret)
    return f"{msg}, got {shown}", hint, False
