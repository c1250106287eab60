"""`Item`: the unit that flows through a pipeline, and its stable id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, object] = MappingProxyType({})


def canonical_json(value: object) -> str:
    """Serialise ``value`` as canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


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
        """The JSON form of DESIGN.md: ``{"id", "source_id", "data", "meta"}``."""
        data = self.data
        if isinstance(data, bytes | bytearray):
            data = {"$bytes": len(data)}
        return {"id": self.id, "source_id": self.source_id, "data": data, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Item:
        """Rebuild an item from its JSON form."""
        return cls(
            id=str(obj["id"]),
            data=obj.get("data"),
            meta=dict(obj.get("meta") or {}),
            source_id=str(obj.get("source_id") or obj["id"]),
        )
