"""`Item`: the unit that flows through a pipeline, and its stable id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, object] = MappingProxyType({})


def _json_default(value: object) -> object:
    # A set's iteration order follows the salted hash of its elements, so it is
    # written in a fixed order; anything else JSON cannot hold is written as str().
    if isinstance(value, set | frozenset):
        return sorted(value, key=canonical_json)
    return str(value)


def canonical_json(value: object) -> str:
    """Serialise ``value`` as canonical JSON: sorted keys, no spaces, UTF-8 kept.

    Sets become lists sorted by their members' canonical JSON, and other
    values JSON cannot hold become ``str(value)``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def stable_id(value: object) -> str:
    """The sha256 (hex) of the canonical JSON of ``value``: never the salted ``hash()``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work.

    Attributes:
        id: sha256 hex of canonical JSON of what defines the item.
        data: the payload (text, bytes, a dict, an embedding record...).
        meta: free metadata (path, offsets, tenant...).
        source_id: id of the source item this one derives from (its lineage).
    """

    id: str
    data: object
    meta: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    source_id: str = ""

    def evolve(self, **changes: Any) -> Item:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, object]:
        """The JSON form of DESIGN.md: ``{"id", "source_id", "data", "meta"}``.

        Bytes data is summarised as ``{"$bytes": length}``; `from_json` gives back
        an equal item for JSON-compatible data.
        """
        data = self.data
        if isinstance(data, bytes | bytearray):
            data = {"$bytes": len(data)}
        return {"id": self.id, "source_id": self.source_id, "data": data, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Item:
        """Rebuild an item from its JSON form.

        A missing or null ``source_id`` means the item is its own source.
        """
        source_id = obj.get("source_id")
        return cls(
            id=str(obj["id"]),
            data=obj.get("data"),
            meta=dict(obj.get("meta") or {}),
            source_id=str(obj["id"] if source_id is None else source_id),
        )
