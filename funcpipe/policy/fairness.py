"""Fair shares across keys: deficit round robin, and keys read from item fields.

`DeficitRoundRobin` is a pure, synchronous scheduler: items are pushed under a
key and popped in deficit-round-robin order, so while several keys have items
waiting each is served in proportion to its weight, whatever the order the
items arrived in. The stream policies (`funcpipe.policy.stream`) put it in
front of the shared concurrency and rate limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

V = TypeVar("V")


def resolve_field(obj: object, path: str) -> object:
    """Follow a dotted ``path`` through attributes and mapping keys of ``obj``.

    ``resolve_field(item, "meta.tenant")`` reads ``item.meta["tenant"]``;
    ``"source_id"`` reads ``item.source_id``. A missing step gives ``None``.
    """
    value: object = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
        if value is None:
            return None
    return value


def field_key(path: str) -> Callable[[object], str]:
    """A key function reading the dotted field ``path`` (e.g. ``meta.tenant``) as text.

    Items without the field share the key ``""``.

    Raises:
        ValueError: if ``path`` is empty or has an empty step.
    """
    if not path or any(not part for part in path.split(".")):
        raise ValueError(f"a field path is dotted names such as meta.tenant or source_id, got {path!r}")

    def key(obj: object) -> str:
        value = resolve_field(obj, path)
        return "" if value is None else str(value)

    return key


class DeficitRoundRobin(Generic[V]):
    """Deficit round robin over per-key FIFO queues, each item costing one unit.

    Keys with items waiting take turns; on its turn a key earns a quantum
    proportional to its weight and is served while its deficit covers an
    item. A key whose queue empties leaves the round and forfeits its credit,
    so an idle key cannot save up a burst. Over any stretch in which a set of
    keys stays backlogged, each key's share of the pops is its weight over the
    set's total weight, within one quantum per key.

    Args:
        weights: relative share per key; keys not listed weigh 1.

    Raises:
        ValueError: if a weight is not a positive finite number.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        weights = dict(weights or {})
        for name, w in weights.items():
            if not 0 < w < float("inf"):
                raise ValueError(f"fairness weight for {name!r} must be a positive number, got {w!r}")
        # Quanta are weights scaled so the lightest key earns one item per turn:
        # then every turn of a backlogged key serves at least one item.
        unit = min([1.0, *weights.values()])
        self._quantum = {name: w / unit for name, w in weights.items()}
        self._default_quantum = 1.0 / unit
        self._queues: dict[str, deque[V]] = {}
        self._deficit: dict[str, float] = {}
        self._ring: deque[str] = deque()
        self._granted = False  # whether the key at the head of the ring has had this turn's quantum
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def waiting(self, key: str) -> int:
        """How many items of ``key`` are waiting."""
        queue = self._queues.get(key)
        return len(queue) if queue is not None else 0

    def keys(self) -> Iterator[str]:
        """The keys with items waiting, in their round-robin order."""
        return iter(tuple(self._ring))

    def firsts(self) -> Iterator[V]:
        """The first waiting item of each key (the oldest of each, as queues are FIFO)."""
        return (queue[0] for queue in self._queues.values())

    def quantum(self, key: str) -> float:
        """The items ``key`` may take per turn (its weight, scaled)."""
        return self._quantum.get(key, self._default_quantum)

    def push(self, key: str, value: V) -> None:
        """Queue ``value`` under ``key``; a key new to the round joins at its end."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._deficit[key] = 0.0
            if not self._ring:
                self._granted = False
            self._ring.append(key)
        queue.append(value)
        self._len += 1

    def pop(self) -> tuple[str, V]:
        """Take the next item in deficit-round-robin order, with its key.

        Raises:
            IndexError: if nothing is waiting.
        """
        if not self._len:
            raise IndexError("pop from an empty DeficitRoundRobin")
        ring = self._ring
        deficit = self._deficit
        key = ring[0]
        if not self._granted:
            deficit[key] += self.quantum(key)
            self._granted = True
        while deficit[key] < 1.0:
            ring.rotate(-1)
            key = ring[0]
            deficit[key] += self.quantum(key)
        deficit[key] -= 1.0
        queue = self._queues[key]
        value = queue.popleft()
        self._len -= 1
        if not queue:
            ring.popleft()
            del self._queues[key], deficit[key]
            self._granted = False
        return key, value


__all__ = ["DeficitRoundRobin", "field_key", "resolve_field"]
