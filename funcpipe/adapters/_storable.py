"""What PostgreSQL refuses to store in ``text`` and ``jsonb``, found before a record is sent.

A ``UTF8`` database refuses NUL (U+0000) in ``text`` (SQLSTATE 22021) and in
any ``jsonb`` string or key, even escaped as ``\\u0000`` (22P05); a lone
surrogate (U+D800 to U+DFFF, what an undecodable byte becomes) cannot even be
encoded as UTF-8 to be sent. ``jsonb`` also has no NaN or infinity. Every
other character is stored as it is. The vector stores check each record with
`refusal` so that such a record fails as ``BAD_INPUT`` naming the field, the
character and its offset, instead of a raw error for its whole batch; the
batching layer then splits the batch so that the record fails alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping

from funcpipe.core import ErrCode, ErrInfo
from funcpipe.ports import VectorRecord

_FIX = "remove it upstream: a text.clean stage drops NUL and lone surrogates from the text and the meta"


def bad_char(text: str) -> tuple[int, str] | None:
    """The offset and name of the first character of ``text`` PostgreSQL refuses, if any."""
    at = text.find("\x00")
    if text.isascii():
        return (at, "U+0000 (NUL)") if at >= 0 else None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        if at < 0 or exc.start < at:
            return exc.start, f"U+{ord(text[exc.start]):04X} (a lone surrogate)"
    return (at, "U+0000 (NUL)") if at >= 0 else None


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value (keys included), with its dotted path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            key = str(k)
            yield f"{path} key", key
            yield from _strings(v, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _non_finite(value: object, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, Mapping):
        return next((p for k, v in value.items() if (p := _non_finite(v, f"{path}.{k}")) is not None), None)
    if isinstance(value, list | tuple):
        return next((p for i, v in enumerate(value) if (p := _non_finite(v, f"{path}[{i}]")) is not None), None)
    return None


def refusal(record: VectorRecord, meta_json: str | None = None) -> ErrInfo | None:
    """Why PostgreSQL would refuse ``record``'s strings or meta, as ``BAD_INPUT``; None if it would not.

    Args:
        record: the record to check.
        meta_json: the meta as it will be sent, if already serialised: a
            meta whose JSON holds neither an escaped NUL nor a non-ASCII
            character is then accepted without walking it.
    """
    for field, value in (("id", record.id), ("source_id", record.source_id), ("text", record.text)):
        found = bad_char(value)
        if found is not None:
            return _refused(record, field, *found)
    if meta_json is not None and "\\u0000" not in meta_json and meta_json.isascii():
        return None
    for path, value in _strings(record.meta, "meta"):
        found = bad_char(value)
        if found is not None:
            return _refused(record, path, *found)
    nan = _non_finite(record.meta, "meta")
    if nan is not None:
        return ErrInfo(
            ErrCode.BAD_INPUT,
            f"record {record.id}: {nan} is NaN or infinite, which JSON (and jsonb) cannot hold",
            {"record": record.id, "field": nan},
        )
    return None


def meta_json(meta: Mapping[str, object]) -> str | None:
    """``meta`` as the stores send it (JSON, keys sorted), or None if JSON cannot hold it."""
    try:
        return json.dumps(dict(meta), default=str, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except ValueError:
        return None


def _refused(record: VectorRecord, field: str, offset: int, char: str) -> ErrInfo:
    return ErrInfo(
        ErrCode.BAD_INPUT,
        f"record {record.id}: {field} holds {char} at offset {offset}, which PostgreSQL cannot store; {_FIX}",
        {"record": record.id, "field": field, "offset": offset, "char": char},
    )


__all__ = ["bad_char", "meta_json", "refusal"]
