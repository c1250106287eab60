"""`Item` and its stable id: sha256 of canonical JSON, never the salted ``hash()``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from funcpipe.core import Item, canonical_json, stable_id

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=5), json_values, max_size=4)
hex_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)


def _reference_id(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@given(json_values)
def test_stable_id_is_the_sha256_of_canonical_json(value: object) -> None:
    assert stable_id(value) == _reference_id(value)


@given(json_objects)
def test_stable_id_ignores_dict_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert stable_id(reordered) == stable_id(value)


def test_canonical_json_is_compact_sorted_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'


def test_canonical_json_writes_sets_in_a_fixed_order() -> None:
    assert canonical_json({"tags": {"b", "a", "c"}}) == '{"tags":["a","b","c"]}'


_SUBPROCESS_ID = (
    "from funcpipe.core import stable_id;"
    "print(stable_id({'source': 'doc.md', 'tags': {'x', 'y', 'z', 'w'}, 'size': 800}))"
)


def test_stable_id_is_the_same_in_every_process_whatever_the_hash_seed() -> None:
    ids = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS_ID], env=env, capture_output=True, text=True, check=True
        )
        ids.add(out.stdout.strip())
    assert ids == {stable_id({"source": "doc.md", "tags": {"x", "y", "z", "w"}, "size": 800})}


def test_stable_id_is_a_sha256_hex_digest() -> None:
    sid = stable_id("text")
    assert len(sid) == 64 and int(sid, 16) >= 0


@given(hex_ids, json_values, json_objects, st.one_of(st.just(""), hex_ids))
def test_to_json_and_from_json_round_trip(id: str, data: object, meta: dict[str, Any], source_id: str) -> None:
    item = Item(id=id, data=data, meta=meta, source_id=source_id)
    assert Item.from_json(item.to_json()) == item
    assert Item.from_json(json.loads(json.dumps(item.to_json()))) == item


def test_to_json_has_the_shared_shape() -> None:
    item = Item(id="c1", data="text", meta={"path": "a.md"}, source_id="s1")
    assert item.to_json() == {"id": "c1", "source_id": "s1", "data": "text", "meta": {"path": "a.md"}}


def test_from_json_without_source_id_makes_the_item_its_own_source() -> None:
    assert Item.from_json({"id": "s1", "data": 1}).source_id == "s1"


def test_to_json_summarises_bytes_by_length() -> None:
    assert Item(id="b", data=b"\x00\x01\x02").to_json()["data"] == {"$bytes": 3}


def test_evolve_returns_a_changed_copy() -> None:
    item = Item(id="a", data=1)
    assert item.evolve(data=2) == Item(id="a", data=2)
    assert item.data == 1
