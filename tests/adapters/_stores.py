"""Helpers shared by the store tests: a fingerprint, records, and reading results."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from funcpipe.core import Ok, Result
from funcpipe.ports import Fingerprint, QueryHit, VectorRecord, VectorStorePort

FP = Fingerprint("hashing", "v1-c3-5-w2", 3)

StoreFactory = Callable[[], VectorStorePort]
"""Makes an empty store."""


async def ready(new_store: StoreFactory, fingerprint: Fingerprint = FP) -> VectorStorePort:
    """A new store, ensured for ``fingerprint``."""
    store = new_store()
    assert await store.ensure(fingerprint)() == Ok(None)
    return store


def rec(
    rid: str, vec: Sequence[float], source: str = "s1", text: str | None = None, origin: str = "p/load", **meta: object
) -> VectorRecord:
    """A record; its text is ``text of <rid>`` unless given."""
    return VectorRecord(rid, source, text if text is not None else f"text of {rid}", list(vec), meta, origin)


def ok(res: Result[object, object]) -> object:
    """The value of an `Ok`, failing the test otherwise."""
    assert isinstance(res, Ok), res
    return res.value


async def hits(store: VectorStorePort, vec: Sequence[float], k: int = 10, **flt: object) -> list[QueryHit]:
    """The store's ``k`` best hits for ``vec``, filtered on ``flt``."""
    value = ok(await store.query(list(vec), k, flt or None)())
    assert isinstance(value, list)
    return value


def tie_groups(result: list[QueryHit], k: int) -> list[tuple[float, frozenset[str]]]:
    """Hits grouped by score, since float32 rounding may order near-ties either way.

    When the result is cut at ``k``, its last group may hold either members
    of a tie, so only the complete groups are compared.
    """
    groups: list[tuple[float, set[str]]] = []
    for h in result:
        if groups and abs(groups[-1][0] - h.score) < 1e-5:
            groups[-1][1].add(h.id)
        else:
            groups.append((h.score, {h.id}))
    if len(result) == k:
        groups = groups[:-1]
    return [(round(score, 4), frozenset(ids)) for score, ids in groups]
